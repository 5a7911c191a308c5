use clap::Parser;

use pattoo_agentd::app::{self, Exit};
use pattoo_agentd::cli::{Cli, Command};

fn main() {
    pattoo_agentd::tune_allocator();
    let cli = Cli::parse();
    if matches!(cli.command, Command::Once { .. }) {
        pattoo_agentd::tune_allocator_for_once();
    }
    let runtime = pattoo_agentd::runtime().expect("the async runtime starts");
    let result = runtime.block_on(app::run(cli));
    if let Err(error) = result {
        if let Some(Exit(code)) = error.downcast_ref::<Exit>() {
            std::process::exit(*code);
        }
        pattoo_agentd::daemon::logging::print_error(&format!(
            "pattoo-agentd: {}",
            pattoo_agentd::error_chain(error.as_ref())
        ));
        std::process::exit(1);
    }
}
