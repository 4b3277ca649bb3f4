//! The daemons' log: lines a person reads on stderr, with a timestamp
//! unless journald (which stamps every line itself) is reading them.
//!
//! The level comes from `--log-level` (error, warn, info, debug, trace);
//! `RUST_LOG`, where set, takes precedence and may name modules
//! (`RUST_LOG=sixgate_runtime=debug,info`).

use tracing_subscriber::EnvFilter;

/// The levels `--log-level` takes.
pub const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// The logging option both daemons' command lines take.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// How much to log: error, warn, info, debug or trace (RUST_LOG, if
    /// set, wins).
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,
}

impl LogArgs {
    /// Installs the subscriber at this level (see [`init`]).
    pub fn init(&self) -> Result<(), String> {
        init(&self.log_level)
    }
}

/// Installs the subscriber for the whole process. Returns an error for a
/// level (or a `RUST_LOG` directive) that does not parse.
pub fn init(level: &str) -> Result<(), String> {
    if !LEVELS.contains(&level) {
        return Err(format!(
            "--log-level {level:?}: one of {}",
            LEVELS.join(", ")
        ));
    }
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => {
            EnvFilter::try_new(&directives).map_err(|e| format!("RUST_LOG={directives:?}: {e}"))?
        }
        _ => EnvFilter::new(level),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(false)
        .with_writer(std::io::stderr);
    // journald stamps each line and sets JOURNAL_STREAM for its children.
    let result = if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().try_init()
    } else {
        builder.try_init()
    };
    result.map_err(|e| format!("logging: {e}"))
}
