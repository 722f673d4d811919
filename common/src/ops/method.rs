//! Bus methods declared once: a name and its message types. The client sends
//! through the declaration and the dispatcher serves through it, so the two
//! sides of the broker cannot disagree on a method's name or types.

use std::{future::Future, marker::PhantomData};

use prost::Message;
use tonic::Status;

use super::OpsResult;
use crate::{
    context::RequestContext,
    rpc::{Dispatcher, RpcClient, Target},
};

/// A cast: persistent, confirmed, handled at least once, no answer.
pub struct Cast<Req> {
    name: &'static str,
    _request: PhantomData<fn(Req)>,
}

/// A call: the caller waits for the `Resp` (or the handler's error).
pub struct Call<Req, Resp> {
    name: &'static str,
    _types: PhantomData<fn(Req) -> Resp>,
}

/// A fanout cast: best effort, to every server of a topic listening now.
pub struct Fanout<Req> {
    name: &'static str,
    _request: PhantomData<fn(Req)>,
}

impl<Req: Message + Default + 'static> Cast<Req> {
    /// The cast named `name` (the AMQP `type`).
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            _request: PhantomData,
        }
    }

    /// The method name.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// Casts `request` to `target`.
    pub async fn send(
        &self,
        rpc: &RpcClient,
        ctx: &RequestContext,
        target: &Target,
        request: &Req,
    ) -> OpsResult<()> {
        Ok(rpc.cast(ctx, target, self.name, request).await?)
    }

    /// Adds this method to `dispatcher`, handled by `handler`.
    pub fn serve<F, Fut>(&self, dispatcher: Dispatcher, handler: F) -> Dispatcher
    where
        F: Fn(RequestContext, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = OpsResult<()>> + Send + 'static,
    {
        serve(dispatcher, self.name, handler)
    }
}

impl<Req: Message + Default + 'static, Resp: Message + Default + 'static> Call<Req, Resp> {
    /// The call named `name` (the AMQP `type`).
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            _types: PhantomData,
        }
    }

    /// The method name.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// Calls `target` with `request` and waits for the answer.
    pub async fn send(
        &self,
        rpc: &RpcClient,
        ctx: &RequestContext,
        target: &Target,
        request: &Req,
    ) -> OpsResult<Resp> {
        Ok(rpc.call(ctx, target, self.name, request).await?)
    }

    /// Adds this method to `dispatcher`, handled by `handler`.
    pub fn serve<F, Fut>(&self, dispatcher: Dispatcher, handler: F) -> Dispatcher
    where
        F: Fn(RequestContext, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = OpsResult<Resp>> + Send + 'static,
    {
        serve(dispatcher, self.name, handler)
    }
}

impl<Req: Message + Default + 'static> Fanout<Req> {
    /// The fanout named `name` (the AMQP `type`).
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            _request: PhantomData,
        }
    }

    /// The method name.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// Casts `request` to every server of `topic` listening now.
    pub async fn send(
        &self,
        rpc: &RpcClient,
        ctx: &RequestContext,
        topic: &str,
        request: &Req,
    ) -> OpsResult<()> {
        Ok(rpc.fanout_cast(ctx, topic, self.name, request).await?)
    }

    /// Adds this method to `dispatcher`, handled by `handler`.
    pub fn serve<F, Fut>(&self, dispatcher: Dispatcher, handler: F) -> Dispatcher
    where
        F: Fn(RequestContext, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = OpsResult<()>> + Send + 'static,
    {
        serve(dispatcher, self.name, handler)
    }
}

/// Adds `name` to `dispatcher`: the handler's [`super::OpsError`] reaches the
/// caller as the status it converts to, unchanged.
fn serve<Req, Resp, F, Fut>(dispatcher: Dispatcher, name: &'static str, handler: F) -> Dispatcher
where
    Req: Message + Default + 'static,
    Resp: Message + 'static,
    F: Fn(RequestContext, Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = OpsResult<Resp>> + Send + 'static,
{
    dispatcher.method(name, move |ctx, req: Req| {
        let done = handler(ctx, req);
        async move { done.await.map_err(Status::from) }
    })
}
