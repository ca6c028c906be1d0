//! The Paystar sink: the request (`event`), the HTTP client (`client`), the one
//! decision table for answers (`classify`) and the queue-draining `worker`.

mod circuit;
pub mod classify;
pub mod client;
pub mod event;
mod limit;
mod logbook;
mod rate;
mod send;
pub mod worker;

pub use circuit::{EndpointProblem, EndpointStatus};
pub use client::PaystarClient;
pub use event::{EventType, PaystarEvent};
pub use logbook::LEARNED_KEY;
pub use worker::{DeliveryCounters, Totals, Until, Worker, WorkerSettings};
