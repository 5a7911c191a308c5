//! Command-line interface.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "pattoo-agentd",
    version,
    about = "Polls Modbus TCP devices, HTTP endpoints and local commands and posts the readings to a pattoo server",
    long_about = None,
)]
pub struct Cli {
    /// Configuration directory [default: $PATTOO_CONFIGDIR, else /etc/pattoo]
    #[arg(long, global = true, value_name = "DIR")]
    pub config_dir: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate all configuration and say what would be polled and where it goes
    Check,
    /// Poll each poller once, then exit
    Once {
        /// Print each body that would be posted as one JSON line on stdout;
        /// post nothing and touch no cache
        #[arg(long)]
        print: bool,
        /// Poll only the poller with this name
        #[arg(long, value_name = "NAME")]
        poller: Option<String>,
    },
    /// Print a completion script for SHELL on stdout (packages install them)
    Completions {
        #[arg(value_enum, value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
}
