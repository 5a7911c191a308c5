//! Logging: a rotated file in `log_directory` at the configured level, plus
//! stderr. Under systemd stderr goes to the journal, which stamps each line
//! itself, so stderr lines carry no timestamp there; instead each starts
//! with its syslog priority in sd-daemon's form (`<3>` for an error), which
//! journald reads and strips, so `journalctl -p err` shows the errors and
//! only them. Colours go to stderr only when it is a terminal and
//! `NO_COLOR` is not set (<https://no-color.org>): in a pipe, a file or a
//! log collector escape codes are noise.

use std::path::Path;

use tracing::level_filters::LevelFilter;
use tracing::Level;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{Builder, Rotation};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, Layer, Registry};

use crate::config::LogLevel;
use crate::pollers::KINDS;

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
/// log would be mostly connection-pool chatter. The protocol libraries
/// that log failures their poller logs again with its poller, target and
/// address (each kind's `QUIET_LIBRARIES`) speak only when debugging.
fn filter(level: LevelFilter) -> Targets {
    let quiet = if level >= LevelFilter::DEBUG {
        level
    } else {
        LevelFilter::OFF
    };
    Targets::new()
        .with_default(level.min(LevelFilter::WARN))
        .with_target(env!("CARGO_CRATE_NAME"), level)
        .with_targets(
            KINDS
                .iter()
                .flat_map(|kind| kind.quiet_libraries)
                .map(|&library| (library, quiet)),
        )
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

/// Whether stderr is the journal: systemd sets `JOURNAL_STREAM` to the
/// device and inode of the stream it connected, and a child that
/// inherited the variable but not the stream (a shell started from a
/// service, say) must not print priorities into a terminal.
fn stderr_is_journal() -> bool {
    static IS_JOURNAL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *IS_JOURNAL.get_or_init(|| {
        let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
            return false;
        };
        let Ok(stat) = nix::sys::stat::fstat(std::io::stderr()) else {
            return false;
        };
        value.to_str() == Some(&format!("{}:{}", stat.st_dev, stat.st_ino))
    })
}

/// Whether stderr lines may carry colours.
fn stderr_in_colour() -> bool {
    use std::io::IsTerminal;
    colour_wanted(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    )
}

/// NO_COLOR counts when set to anything but the empty string.
fn colour_wanted(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|value| value.is_empty())
}

/// The sd-daemon prefix journald turns into a message's priority.
fn journal_prefix(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "<3>",
        Level::WARN => "<4>",
        Level::INFO => "<6>",
        Level::DEBUG | Level::TRACE => "<7>",
    }
}

/// Formats events for the journal: the priority prefix, then the message
/// and its fields, with no time (journald adds it) and no level word (the
/// priority says it).
struct JournalFormat;

impl<S, N> FormatEvent<S, N> for JournalFormat
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        writer.write_str(journal_prefix(event.metadata().level()))?;
        ctx.format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Prints an error report of one or more lines to stderr; in the journal,
/// every line at priority err.
pub fn print_error(text: &str) {
    eprint!("{}", error_report(text, stderr_is_journal()));
}

fn error_report(text: &str, journal: bool) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for line in text.lines() {
        if journal {
            out.push_str(journal_prefix(&Level::ERROR));
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Logging for short commands (`check`, `once`, `cache`, and `reload`
/// from the unit): stderr only.
pub fn init_stderr(level: LevelFilter) {
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let layer = if stderr_is_journal() {
        layer.with_ansi(false).event_format(JournalFormat).boxed()
    } else {
        layer.with_ansi(stderr_in_colour()).boxed()
    };
    let _ = tracing_subscriber::registry()
        .with(filter(level))
        .with(layer)
        .try_init();
}

/// Logging for the daemon: the log file and stderr.
pub fn init_daemon(
    log_directory: &Path,
    level: LogLevel,
) -> anyhow::Result<(LogGuard, LevelHandle)> {
    crate::durable::create_private_dir(log_directory).map_err(|err| {
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
    let stderr_layer = if stderr_is_journal() {
        stderr_layer
            .with_ansi(false)
            .event_format(JournalFormat)
            .boxed()
    } else {
        stderr_layer.with_ansi(stderr_in_colour()).boxed()
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(file_layer)
        .with(stderr_layer)
        .try_init()
        .map_err(|err| anyhow::anyhow!("logging is already set up: {err}"))?;
    Ok((LogGuard { _file: Some(guard) }, LevelHandle(handle)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_reports_in_the_journal_mark_every_line_as_an_error() {
        let text = "2 configuration errors:\n  a.yaml:1:1: bad\n  a.yaml:2:1: worse\n";
        assert_eq!(
            error_report(text, true),
            "<3>2 configuration errors:\n<3>  a.yaml:1:1: bad\n<3>  a.yaml:2:1: worse\n"
        );
        assert_eq!(error_report(text, false), text);
    }

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(colour_wanted(true, None));
        assert!(colour_wanted(true, Some(OsStr::new(""))));
        assert!(!colour_wanted(true, Some(OsStr::new("1"))));
        assert!(!colour_wanted(false, None));
    }

    #[test]
    fn each_level_maps_to_its_syslog_priority() {
        assert_eq!(journal_prefix(&Level::ERROR), "<3>");
        assert_eq!(journal_prefix(&Level::WARN), "<4>");
        assert_eq!(journal_prefix(&Level::INFO), "<6>");
        assert_eq!(journal_prefix(&Level::DEBUG), "<7>");
    }
}
