//! Reports on a finished run directory: the loss landscape along the line
//! from θ₀ to the best θ, and one self-contained HTML page with SVG plots
//! of the run's curves and optimizer diagnostics.

pub mod landscape;
mod page;
mod run_files;
mod svg;

pub use landscape::{LandscapeOptions, LandscapePoint, landscape};
pub use page::{REPORT_FILE, write_report};
