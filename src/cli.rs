//! Command-line interface.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "pattoo-agentd",
    version,
    about = "Polls Modbus devices (TCP, RTU over TCP, serial RTU), HTTP endpoints and local commands and posts the readings to a pattoo server",
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
    /// Run as a service: poll on schedule, post, cache and replay until stopped
    Run,
    /// Validate all configuration and build the HTTP clients as run would; say
    /// what would be polled and where it goes, including the host name
    /// datapoints carry and where it came from
    Check,
    /// Validate all configuration, then tell the running service (process
    /// PID) to re-read it; what the systemd unit's ExecReload= runs
    Reload {
        /// The service's process id ($MAINPID in the unit); must be the
        /// pattoo-agentd holding this configuration's lock, or nothing is
        /// signalled
        #[arg(long, value_name = "PID")]
        pid: i32,
    },
    /// Poll each poller once, then exit
    Once {
        /// Print each body that would be posted as one JSON line on stdout;
        /// post nothing and touch no cache
        #[arg(long)]
        print: bool,
        /// Poll only the poller with this name
        #[arg(long, value_name = "NAME")]
        poller: Option<String>,
        /// With --print, also print the self-monitoring body this run would
        /// post (a poll prints only its pollers' bodies otherwise, one per
        /// line, as tools that read them expect)
        #[arg(long, requires = "print", conflicts_with = "poller")]
        self_monitoring: bool,
    },
    /// Show what the running agent is doing: each poller's last poll,
    /// failures and next tick, the cache and the server
    Status,
    /// Inspect, send or purge the cache of undelivered bodies
    Cache {
        #[command(subcommand)]
        action: CacheCommand,
    },
    /// Run a minimal pattoo agent-API receiver that stores what it accepts
    Receive {
        /// Address to listen on, e.g. 127.0.0.1:20201 (port 0 picks one)
        #[arg(long, value_name = "ADDR")]
        listen: std::net::SocketAddr,
        /// Directory to store accepted bodies in
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Print CSV naming every key the configured pollers post, for
    /// `pattoo_cli.py import key_translation` (with --agents, `import
    /// agent_translation`)
    Translations {
        /// Only the keys of this agent program (e.g. pattoo_agentd_snmp)
        #[arg(long, value_name = "PROGRAM")]
        program: Option<String>,
        /// The language code to write [default: pattoo.yaml's language, else en]
        #[arg(long, value_name = "CODE")]
        language: Option<String>,
        /// Name the agent programs instead of the keys
        #[arg(long)]
        agents: bool,
    },
    /// Look at the Python agents on this host (their systemd units,
    /// configuration, agent ids and cache) and print what switching to
    /// pattoo-agentd involves: the files it reads, the datapoints one poll
    /// of each gives, and the commands that switch
    SwitchFromPython {
        /// The directory standing for the host's root (for tests)
        #[arg(long, value_name = "DIR", default_value = "/")]
        root: PathBuf,
        /// Switch: stop and disable the Python units taken over, then enable
        /// and start pattoo-agentd (asks first on a terminal)
        #[arg(long, conflicts_with = "undo")]
        apply: bool,
        /// Go back: stop and disable pattoo-agentd, remove the drop-in
        /// --apply wrote, enable and start the Python units it stopped
        #[arg(long)]
        undo: bool,
        /// Do not ask (needed when stdin is not a terminal)
        #[arg(long)]
        yes: bool,
        /// With --apply: how long to wait, after each drop-in's first poll
        /// is due, for it to post (0: do not check)
        #[arg(long, value_name = "DURATION", default_value = crate::switch::DEFAULT_WAIT, value_parser = crate::delivery::config::parse_age)]
        wait: std::time::Duration,
        /// The systemctl to run
        #[arg(
            long,
            value_name = "PATH",
            env = "PATTOO_SYSTEMCTL",
            default_value = "systemctl"
        )]
        systemctl: PathBuf,
    },
    /// Find devices on the network and print them as poller configuration
    /// (pollers never do this on their own)
    #[cfg(feature = "bacnet")]
    Discover {
        #[command(subcommand)]
        kind: DiscoverCommand,
    },
    /// Print a completion script for SHELL on stdout (packages install them)
    Completions {
        #[arg(value_enum, value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) on stdout; packages install it
    #[command(hide = true)]
    Man,
}

#[cfg(feature = "bacnet")]
#[derive(Debug, Subcommand)]
pub enum DiscoverCommand {
    /// Send one Who-Is (to one device, or broadcast) and print each device
    /// that answers with I-Am as a `type: bacnet` poller to paste into
    /// pattoo_agentd.yaml
    Bacnet {
        /// Address (and port) to send from; devices answer to it
        #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:47808", value_parser = crate::pollers::bacnet::discover::parse_address)]
        local: std::net::SocketAddr,
        /// Broadcast the Who-Is to this address (port 47808 unless given)
        #[arg(long, value_name = "ADDR", default_value = "255.255.255.255:47808", value_parser = crate::pollers::bacnet::discover::parse_address)]
        broadcast: std::net::SocketAddr,
        /// Send the Who-Is to this one device instead of broadcasting
        #[arg(long, value_name = "ADDR", conflicts_with = "broadcast", value_parser = crate::pollers::bacnet::discover::parse_address)]
        to: Option<std::net::SocketAddr>,
        /// Seconds to collect answers for
        #[arg(long, value_name = "SECS", default_value_t = 3)]
        wait: u64,
        /// Only devices with an instance from this one...
        #[arg(long, value_name = "N", requires = "high")]
        low: Option<u32>,
        /// ...to this one
        #[arg(long, value_name = "N", requires = "low")]
        high: Option<u32>,
        /// Read each device's object-list and object names too
        #[arg(long)]
        objects: bool,
        /// Per request for --objects, in milliseconds
        #[arg(long, value_name = "MS", default_value_t = 3000)]
        timeout_ms: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Per agent id: cached files, bytes and the oldest body's time
    Status,
    /// Send cached bodies now, oldest first, and say what was sent
    Replay,
    /// Delete cached bodies older than a duration
    Purge {
        /// e.g. 12h or 7d
        #[arg(long, value_name = "DURATION", value_parser = crate::delivery::config::parse_age)]
        older_than: std::time::Duration,
        /// Really delete; without it, only say what would be deleted
        #[arg(long)]
        yes: bool,
    },
}
