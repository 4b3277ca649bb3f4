//! What the daemons' `main` functions share: running their async work on
//! a small runtime and turning the outcome into an exit status and a
//! message prefixed with the program's name.

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
