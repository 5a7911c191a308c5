//! Logging: a rotated file in `log_directory` at the configured level, plus
//! stderr. Under systemd (`JOURNAL_STREAM` set) stderr goes to the journal,
//! which stamps each line itself, so stderr lines carry no timestamp there.

use std::path::Path;

use tracing::level_filters::LevelFilter;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{Builder, Rotation};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, Layer, Registry};

use crate::config::LogLevel;

/// Log files kept: a week of daily files.
const KEPT_LOG_FILES: usize = 7;
/// Log lines waiting for the file writer; see `init_daemon`.
const LOG_QUEUE_LINES: usize = 4096;

pub fn level_filter(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Warning => LevelFilter::WARN,
        LogLevel::Error | LogLevel::Critical => LevelFilter::ERROR,
    }
}

/// The configured level applies to the agent's own messages; libraries
/// (HTTP, TLS, Modbus) only say something at WARN and above, or a `debug`
/// log would be mostly connection-pool chatter.
fn filter(level: LevelFilter) -> Targets {
    // The SNMP library logs each failed request itself, at ERROR for a
    // timeout; the SNMP poller logs the same failure with the poller,
    // target and OID, so the library speaks only when debugging.
    let snmp_library = if level >= LevelFilter::DEBUG {
        level
    } else {
        LevelFilter::OFF
    };
    Targets::new()
        .with_default(level.min(LevelFilter::WARN))
        .with_target(env!("CARGO_CRATE_NAME"), level)
        .with_target("async_snmp", snmp_library)
}

/// Changes the level of a running daemon (on reload).
pub struct LevelHandle(reload::Handle<Targets, Registry>);

impl LevelHandle {
    pub fn set(&self, level: LogLevel) {
        if let Err(err) = self
            .0
            .modify(|targets| *targets = filter(level_filter(level)))
        {
            tracing::warn!("cannot change the log level: {err}");
        }
    }
}

/// Keeps the file writer's background thread alive; dropping it flushes.
pub struct LogGuard {
    _file: Option<WorkerGuard>,
}

fn under_systemd() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some()
}

/// Logging for short commands (`check`, `once`, `cache`): stderr only.
pub fn init_stderr(level: LevelFilter) {
    let _ = tracing_subscriber::registry()
        .with(filter(level))
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false),
        )
        .try_init();
}

/// Logging for the daemon: the log file and stderr.
pub fn init_daemon(
    log_directory: &Path,
    level: LogLevel,
) -> anyhow::Result<(LogGuard, LevelHandle)> {
    crate::identity::create_private_dir(log_directory).map_err(|err| {
        anyhow::anyhow!(
            "cannot create log directory {}: {err}",
            log_directory.display()
        )
    })?;
    let appender = Builder::new()
        .rotation(Rotation::DAILY)
        .filename_prefix("pattoo-agentd")
        .filename_suffix("log")
        .max_log_files(KEPT_LOG_FILES)
        .build(log_directory)
        .map_err(|err| {
            anyhow::anyhow!(
                "cannot open a log file in {}: {err}",
                log_directory.display()
            )
        })?;
    // The default queue holds 128,000 lines and is allocated and touched
    // up front: 4 MB, a third of the daemon's memory. A few thousand lines
    // is still far more than the agent logs between two writes; lines
    // beyond it are dropped rather than blocking a poller.
    let (file_writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .finish(appender);
    let (filter, handle) = reload::Layer::new(filter(level_filter(level)));

    let file_layer = tracing_subscriber::fmt::layer()
        .with_writer(file_writer)
        .with_ansi(false)
        .with_target(false);
    let stderr_layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let stderr_layer = if under_systemd() {
        stderr_layer.without_time().with_ansi(false).boxed()
    } else {
        stderr_layer.boxed()
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(file_layer)
        .with(stderr_layer)
        .try_init()
        .map_err(|err| anyhow::anyhow!("logging is already set up: {err}"))?;
    Ok((LogGuard { _file: Some(guard) }, LevelHandle(handle)))
}
