//! What the daemons' `main` functions share: running their async work on
//! a small runtime, turning the outcome into an exit status and a message
//! prefixed with the program's name, and behaving like a Unix tool when
//! the reader of their output goes away.

use std::future::Future;
use std::process::ExitCode;

/// Runs `work` on a two-thread runtime; an error is printed as
/// "PROGRAM: ERROR" and exits with status 1.
pub fn run(program: &str, work: impl Future<Output = Result<(), String>>) -> ExitCode {
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|runtime| runtime.block_on(work));
    exit(program, result)
}

/// The exit status for a result, printing the error.
pub fn exit(program: &str, result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{program}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Lets SIGPIPE end the process, as it ends every Unix tool whose reader
/// went away (`status | head -1`): Rust ignores it, and printing to a
/// closed pipe then panics. For the CLI verbs only; a daemon keeps it
/// ignored, for its sockets.
#[allow(unsafe_code)]
pub fn exit_on_broken_pipe() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: SIG_DFL installs no handler of ours, so nothing runs in
    // signal context; called before any thread is started.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

/// Prints `value` as pretty JSON, for `--json`.
pub fn print_json(value: &impl serde::Serialize) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    println!("{text}");
    Ok(())
}
