//! Security: TLS on every hop. gRPC over TLS and mTLS (refusals, plaintext,
//! grpcurl), certificate reload without dropping connections, the whole volume
//! lifecycle over gRPC TLS + `amqps://` + PostgreSQL `verify-full`, and a wrong
//! CA or host stopping a process at start. The RabbitMQ node and PostgreSQL
//! cluster these start are the tests' own (`scoria_tests::fixtures`).

mod hops;
mod mtls;
mod reload;
mod support;
