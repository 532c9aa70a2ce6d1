//! The parameter server: it stores θ, applies the gradients that workers push
//! with SGD and momentum, and serves θ to workers and the coordinator.
//!
//! The server starts empty. The coordinator sends the initial θ and the
//! optimizer settings with `Init`; from then on every `Push` is applied as
//! it arrives (asynchronous SGD) and bumps the version by one. `Finish`
//! ends the run and makes [`serve`] return.

mod optimizer;
mod service;

pub use store::{Push, PushTotals};
mod store;

pub use optimizer::SgdConfig;
pub use service::{ParameterServerService, serve};
pub use store::{ParamStore, PushOutcome, StoreError};
