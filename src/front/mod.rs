//! Fronts: where requests come in. Each one only translates its transport
//! into `http::Request<Body>` + [`RequestInfo`](crate::gateway::RequestInfo)
//! and hands it to the [`Gateway`](crate::gateway::Gateway); none decides
//! anything.

#[cfg(feature = "http")]
pub mod listener;

#[cfg(feature = "lambda")]
pub mod lambda;
