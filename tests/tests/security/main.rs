//! Who may do what, and who can read the bytes: JWT identity, policy, TLS on the
//! gRPC, AMQP and PostgreSQL hops, request limits and input hardening, against
//! real processes.
