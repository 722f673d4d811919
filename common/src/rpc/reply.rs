//! `RpcReply` on the bus and `tonic::Status` in code, converted without loss: the
//! code, message, binary details and metadata all survive the trip.

use bytes::Bytes;
use prost::Message;
use scoria_proto::rpc::{RemoteError, RpcReply, rpc_reply::Outcome};
use tonic::{
    Code, Status,
    metadata::{
        AsciiMetadataKey, AsciiMetadataValue, BinaryMetadataKey, BinaryMetadataValue,
        KeyAndValueRef, MetadataMap,
    },
};

/// Encodes a handler's outcome as an `RpcReply` body.
pub fn encode(outcome: Result<Bytes, Status>) -> Vec<u8> {
    let outcome = match outcome {
        Ok(result) => Outcome::Result(result),
        Err(status) => Outcome::Error(status_to_remote(&status)),
    };
    RpcReply {
        outcome: Some(outcome),
    }
    .encode_to_vec()
}

/// Decodes an `RpcReply` body into the result bytes or the remote status.
pub fn decode(body: &[u8]) -> Result<Result<Bytes, Status>, prost::DecodeError> {
    let reply = RpcReply::decode(body)?;
    Ok(match reply.outcome {
        Some(Outcome::Result(bytes)) => Ok(bytes),
        Some(Outcome::Error(err)) => Err(remote_to_status(err)),
        // An empty reply body is an empty result message (all fields default).
        None => Ok(Bytes::new()),
    })
}

/// A `Status` as a `RemoteError`.
pub fn status_to_remote(status: &Status) -> RemoteError {
    let metadata = status
        .metadata()
        .iter()
        .map(|entry| match entry {
            KeyAndValueRef::Ascii(k, v) => {
                (k.as_str().to_owned(), Bytes::copy_from_slice(v.as_bytes()))
            }
            KeyAndValueRef::Binary(k, v) => (
                k.as_str().to_owned(),
                v.to_bytes()
                    .unwrap_or_else(|_| Bytes::copy_from_slice(v.as_encoded_bytes())),
            ),
        })
        .collect();
    RemoteError {
        code: status.code() as i32,
        message: status.message().to_owned(),
        details: Bytes::copy_from_slice(status.details()),
        metadata,
    }
}

/// A `RemoteError` as a `Status`.
pub fn remote_to_status(err: RemoteError) -> Status {
    let mut metadata = MetadataMap::new();
    for (key, value) in err.metadata {
        if key.ends_with("-bin") {
            if let Ok(k) = BinaryMetadataKey::from_bytes(key.as_bytes()) {
                metadata.append_bin(k, BinaryMetadataValue::from_bytes(&value));
            }
        } else if let (Ok(k), Ok(v)) = (
            AsciiMetadataKey::from_bytes(key.as_bytes()),
            AsciiMetadataValue::try_from(value.as_ref()),
        ) {
            metadata.append(k, v);
        }
    }
    Status::with_details_and_metadata(Code::from_i32(err.code), err.message, err.details, metadata)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_survives_the_trip() {
        let mut md = MetadataMap::new();
        md.insert("x-field", AsciiMetadataValue::from_static("size_gib"));
        md.insert_bin(
            "x-blob-bin",
            BinaryMetadataValue::from_bytes(&[0, 1, 2, 255]),
        );
        let status = Status::with_details_and_metadata(
            Code::FailedPrecondition,
            "volume v1 is in-use",
            Bytes::from_static(&[9, 8, 7]),
            md,
        );
        let body = encode(Err(status));
        let back = decode(&body).expect("decodes").expect_err("is an error");
        assert_eq!(back.code(), Code::FailedPrecondition);
        assert_eq!(back.message(), "volume v1 is in-use");
        assert_eq!(back.details(), &[9, 8, 7]);
        assert_eq!(
            back.metadata().get("x-field").and_then(|v| v.to_str().ok()),
            Some("size_gib")
        );
        let blob = back
            .metadata()
            .get_bin("x-blob-bin")
            .and_then(|v| v.to_bytes().ok());
        assert_eq!(blob.as_deref(), Some(&[0u8, 1, 2, 255][..]));
    }

    #[test]
    fn result_survives_the_trip() {
        let body = encode(Ok(Bytes::from_static(b"abc")));
        assert_eq!(
            decode(&body).expect("decodes").expect("ok"),
            Bytes::from_static(b"abc")
        );
    }
}
