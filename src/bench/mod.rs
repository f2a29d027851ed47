//! `aop bench`: a load generator that drives an already running collector over loopback.

/// Options of `aop bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The collector to drive.
    #[arg(long, default_value = "http://127.0.0.1:4317")]
    pub url: String,
}

/// Runs the selected workloads and prints one line per figure.
pub fn run(_args: BenchArgs) -> std::process::ExitCode {
    eprintln!("aop bench: not implemented yet");
    std::process::ExitCode::FAILURE
}
