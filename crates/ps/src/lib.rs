//! The parameter server: it stores θ, applies the gradients that workers push
//! with SGD and momentum, and serves θ to workers and the coordinator.
//!
//! The server starts empty. The coordinator sends the initial θ, the
//! optimizer settings and the consistency mode with `Init`. In async mode
//! every `Push` is applied as it arrives and bumps the version by one; in
//! bounded mode the reply to a push waits while the pusher is too far
//! ahead of the slowest worker; in sync mode the pushes of one step are
//! averaged into one update. `StopTraining` freezes θ, and `Finish` ends the
//! run and makes [`serve`] return.

mod consistency;
mod metrics;
mod optimizer;
mod service;
mod store;

pub use consistency::{ClockError, Compensation, Consistency, ParseConsistencyError, StepClock};
pub use optimizer::SgdConfig;
pub use service::{Checkpointing, ParameterServerService, RestoreError, serve, serve_service};
pub use store::{Accepted, CheckpointError, ParamStore, Push, PushTotals, StoreError};
