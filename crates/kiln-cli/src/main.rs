use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(kiln_cli::exit_status(kiln_cli::main_with_args(
        std::env::args_os(),
    )))
}
