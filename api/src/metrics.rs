//! gRPC server metrics with go-grpc-prometheus's names, as one tower layer:
//! `grpc_server_started_total`, `grpc_server_handled_total` and the
//! `grpc_server_handling_seconds` histogram, labelled `grpc_service`,
//! `grpc_method`, `grpc_type` (`unary`, `server_stream`, from the descriptor
//! set) and, when handled, `grpc_code` (`OK`, `NotFound` ...).
//!
//! A call is handled when its `grpc-status` is known: in the response headers
//! (a trailers-only reply, as errors usually are) or in the trailers at the end
//! of the body (so a stream counts when it ends, with its duration). A body
//! dropped before its trailers (the client went away) counts as `Canceled`.
//! Only the `scoria.v1` services are measured: health and reflection are not
//! (their paths are not in the descriptor set), and no path from the wire ever
//! becomes a label.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
    time::Instant,
};

use http_body::{Body, Frame, SizeHint};
use prometheus_client::metrics::{counter::Counter, family::Family, histogram::Histogram};
use prost::Message;
use scoria_common::metrics::{Labels, code_name, duration_family, global};
use tonic::Code;
use tower::{Layer, Service};

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

type Families = (
    Family<Labels<3>, Counter>,
    Family<Labels<4>, Counter>,
    Family<Labels<3>, Histogram, fn() -> Histogram>,
);

/// The families, registered once per process.
fn families() -> &'static Families {
    static FAMILIES: OnceLock<Families> = OnceLock::new();
    FAMILIES.get_or_init(|| {
        let families: Families = (Family::default(), Family::default(), duration_family());
        let m = global();
        m.register(
            "grpc_server_started",
            "Total number of RPCs started on the server.",
            families.0.clone(),
        );
        m.register(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            families.1.clone(),
        );
        m.register(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
            families.2.clone(),
        );
        families
    })
}

/// One method's labels and its pre-resolved series.
struct MethodMetrics {
    service: String,
    method: String,
    kind: &'static str,
    started: Counter,
    handling: Histogram,
}

impl MethodMetrics {
    fn handled(&self, code: Code, since: Instant) {
        families()
            .1
            .get_or_create(&[
                ("grpc_service", self.service.clone()),
                ("grpc_method", self.method.clone()),
                ("grpc_type", self.kind.to_owned()),
                ("grpc_code", code_name(code).to_owned()),
            ])
            .inc();
        self.handling.observe(since.elapsed().as_secs_f64());
    }
}

/// `/package.Service/Method` split into service and method.
pub fn split_path(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/'))
        .then_some((service, method))
}

/// go-grpc-prometheus's `grpc_type` of a method.
pub fn grpc_type(client_streaming: bool, server_streaming: bool) -> &'static str {
    match (client_streaming, server_streaming) {
        (false, false) => "unary",
        (false, true) => "server_stream",
        (true, false) => "client_stream",
        (true, true) => "bidi_stream",
    }
}

/// Measures every call of the `scoria.v1` services.
#[derive(Clone)]
pub struct GrpcMetricsLayer {
    methods: Arc<HashMap<String, Arc<MethodMetrics>>>,
}

impl GrpcMetricsLayer {
    /// The layer over the methods of [`scoria_proto::FILE_DESCRIPTOR_SET`].
    pub fn new() -> Self {
        let (started, _, handling) = families();
        let mut methods = HashMap::new();
        let set = prost_types::FileDescriptorSet::decode(scoria_proto::FILE_DESCRIPTOR_SET)
            .unwrap_or_default();
        for file in &set.file {
            for service in &file.service {
                let full = format!("{}.{}", file.package(), service.name());
                for method in &service.method {
                    let kind = grpc_type(method.client_streaming(), method.server_streaming());
                    let labels = [
                        ("grpc_service", full.clone()),
                        ("grpc_method", method.name().to_owned()),
                        ("grpc_type", kind.to_owned()),
                    ];
                    let metrics = MethodMetrics {
                        service: full.clone(),
                        method: method.name().to_owned(),
                        kind,
                        started: started.get_or_create(&labels).clone(),
                        handling: handling.get_or_create(&labels).clone(),
                    };
                    methods.insert(format!("/{full}/{}", method.name()), Arc::new(metrics));
                }
            }
        }
        Self {
            methods: Arc::new(methods),
        }
    }
}

impl Default for GrpcMetricsLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics {
            inner,
            methods: self.methods.clone(),
        }
    }
}

/// The service [`GrpcMetricsLayer`] makes.
#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    methods: Arc<HashMap<String, Arc<MethodMetrics>>>,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for GrpcMetrics<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let method = self.methods.get(request.uri().path()).cloned();
        let started = Instant::now();
        if let Some(method) = &method {
            method.started.inc();
        }
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            let Some(method) = method else {
                return response.map(|r| {
                    r.map(|body| MeteredBody {
                        body,
                        pending: None,
                    })
                });
            };
            match response {
                Ok(response) => {
                    let pending = match header_code(response.headers()) {
                        Some(code) => {
                            method.handled(code, started);
                            None
                        }
                        None => Some((method, started)),
                    };
                    Ok(response.map(|body| MeteredBody { body, pending }))
                }
                Err(err) => {
                    method.handled(Code::Internal, started);
                    Err(err)
                }
            }
        })
    }
}

/// The `grpc-status` in `headers`, if any.
fn header_code(headers: &http::HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .map(|value| Code::from_bytes(value.as_bytes()))
}

/// A response body that records its call when the trailers pass.
pub struct MeteredBody<B> {
    body: B,
    pending: Option<(Arc<MethodMetrics>, Instant)>,
}

impl<B> MeteredBody<B> {
    fn finish(&mut self, code: Code) {
        if let Some((method, started)) = self.pending.take() {
            method.handled(code, started);
        }
    }
}

impl<B: Body + Unpin> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(header_code) {
                    self.finish(code);
                }
            }
            Poll::Ready(Some(Err(_))) => self.finish(Code::Internal),
            // Ended without a status: gRPC reads that as OK-less, i.e. unknown.
            Poll::Ready(None) => self.finish(Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl<B> Drop for MeteredBody<B> {
    fn drop(&mut self) {
        // The client went away (or the server stopped) before the status.
        self.finish(Code::Cancelled);
    }
}

/// `scoria_transfer_accept_denied_total`: AcceptTransfer calls refused for a
/// wrong auth key (registered on first use).
pub fn transfer_key_rejections() -> &'static Counter {
    static COUNTER: OnceLock<Counter> = OnceLock::new();
    COUNTER.get_or_init(|| {
        let counter = Counter::default();
        global().register(
            "scoria_transfer_accept_denied",
            "AcceptTransfer calls refused because the auth key was wrong.",
            counter.clone(),
        );
        counter
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body of one trailers frame carrying `code` (none: ends without one).
    struct Trailers(Option<Code>);

    impl Body for Trailers {
        type Data = tonic::codegen::Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
            Poll::Ready(self.0.take().map(|code| {
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", http::HeaderValue::from(code as i32));
                Ok(Frame::trailers(trailers))
            }))
        }
    }

    fn handled(method: &str, code: &str) -> u64 {
        families()
            .1
            .get_or_create(&[
                ("grpc_service", "scoria.v1.VolumeService".to_owned()),
                ("grpc_method", method.to_owned()),
                ("grpc_type", "unary".to_owned()),
                ("grpc_code", code.to_owned()),
            ])
            .get()
    }

    async fn call(
        path: &str,
        header: Option<Code>,
        trailer: Option<Code>,
    ) -> MeteredBody<Trailers> {
        use tower::ServiceExt;
        let inner = tower::service_fn(move |_req: http::Request<()>| async move {
            let mut response = http::Response::new(Trailers(trailer));
            if let Some(code) = header {
                response
                    .headers_mut()
                    .insert("grpc-status", http::HeaderValue::from(code as i32));
            }
            Ok::<_, std::convert::Infallible>(response)
        });
        let request = http::Request::builder()
            .uri(path)
            .body(())
            .expect("request");
        GrpcMetricsLayer::new()
            .layer(inner)
            .oneshot(request)
            .await
            .expect("infallible")
            .into_body()
    }

    async fn drain(mut body: MeteredBody<Trailers>) {
        while std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx))
            .await
            .is_some()
        {}
    }

    #[tokio::test]
    async fn the_code_is_read_from_the_headers_the_trailers_or_a_drop() {
        let before = |m| {
            (
                handled(m, "NotFound"),
                handled(m, "OK"),
                handled(m, "Canceled"),
            )
        };
        let (nf, ok, cancelled) = before("GetVolume");
        drop(
            call(
                "/scoria.v1.VolumeService/GetVolume",
                Some(Code::NotFound),
                None,
            )
            .await,
        );
        assert_eq!(handled("GetVolume", "NotFound"), nf + 1, "trailers-only");
        let body = call("/scoria.v1.VolumeService/GetVolume", None, Some(Code::Ok)).await;
        assert_eq!(handled("GetVolume", "OK"), ok, "not before the body ends");
        drain(body).await;
        assert_eq!(handled("GetVolume", "OK"), ok + 1, "from the trailers");
        drop(call("/scoria.v1.VolumeService/GetVolume", None, Some(Code::Ok)).await);
        assert_eq!(
            handled("GetVolume", "Canceled"),
            cancelled + 1,
            "dropped early"
        );
        // Paths outside the descriptor set pass through unmeasured.
        drain(call("/grpc.health.v1.Health/Check", None, Some(Code::Ok)).await).await;
    }

    #[test]
    fn paths_split_into_service_and_method() {
        assert_eq!(
            split_path("/scoria.v1.VolumeService/CreateVolume"),
            Some(("scoria.v1.VolumeService", "CreateVolume"))
        );
        assert_eq!(split_path("/scoria.v1.VolumeService/"), None);
        assert_eq!(split_path("scoria.v1.VolumeService/CreateVolume"), None);
        assert_eq!(split_path("/a/b/c"), None);
        assert_eq!(split_path("/"), None);
    }

    #[test]
    fn stream_kinds_are_named_as_go_grpc_prometheus_names_them() {
        assert_eq!(grpc_type(false, false), "unary");
        assert_eq!(grpc_type(false, true), "server_stream");
        assert_eq!(grpc_type(true, true), "bidi_stream");
    }

    #[test]
    fn the_layer_knows_every_scoria_method_with_its_type() {
        let layer = GrpcMetricsLayer::new();
        let create = &layer.methods["/scoria.v1.VolumeService/CreateVolume"];
        assert_eq!(
            (create.service.as_str(), create.method.as_str(), create.kind),
            ("scoria.v1.VolumeService", "CreateVolume", "unary")
        );
        assert!(!layer.methods.contains_key("/grpc.health.v1.Health/Check"));
        for path in layer.methods.keys() {
            assert!(split_path(path).is_some(), "{path}");
        }
    }
}
