use std::process::ExitCode;

fn main() -> ExitCode {
    match kiln_cli::main_with_args(std::env::args_os()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole chain: "running X on ndarray: <file>: <what was wrong>".
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
