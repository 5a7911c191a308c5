//! The manual page, `pattoo-agentd(1)`: its synopsis, options and commands
//! are generated from the clap definitions in [`crate::cli`], so they say
//! what `--help` says; the prose (description, configuration, files,
//! signals, exit status) is `packaging/pattoo-agentd.1.in`, split at its
//! marker line to let the generated part sit between description and
//! configuration. Each poller kind's section is the kind's own
//! (`src/pollers/<kind>/manual.roff`, [`crate::pollers::Kind::MANUAL`]),
//! put in table order at a second marker, and the list of `type:` values
//! at a third: the page describes the kinds this build has.

use std::fmt::Write as _;
use std::io::Write;

use clap::CommandFactory;

use crate::cli::Cli;
use crate::pollers::KINDS;

const PROSE: &str = include_str!("../packaging/pattoo-agentd.1.in");
const MARKER: &str = ".\\\" @GENERATED OPTIONS AND COMMANDS@\n";
const KINDS_MARKER: &str = ".\\\" @GENERATED POLLER KINDS@\n";
const TYPES_MARKER: &str = ".\\\" @GENERATED POLLER TYPES@\n";
const DROP_INS_MARKER: &str = ".\\\" @GENERATED DROP-INS@\n";

/// The page in roff, as `man` reads it.
pub fn render() -> Vec<u8> {
    let command = Cli::command();
    let man = clap_mangen::Man::new(command.clone())
        // The version stands where a date would: roff drops an empty
        // argument and would shift the others.
        .date(env!("CARGO_PKG_VERSION"))
        .source("pattoo-agentd")
        .manual("User Commands");
    let (before, after) = PROSE
        .split_once(MARKER)
        .expect("packaging/pattoo-agentd.1.in has its marker line");
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    man.render_title(&mut out).expect("in memory");
    man.render_name_section(&mut out).expect("in memory");
    man.render_synopsis_section(&mut out).expect("in memory");
    out.extend_from_slice(before.as_bytes());
    man.render_options_section(&mut out).expect("in memory");
    out.extend_from_slice(b".SH COMMANDS\n");
    for sub in command.get_subcommands().filter(|c| !c.is_hide_set()) {
        render_command(&mut out, &[command.get_name()], sub);
    }
    out.extend_from_slice(kinds(after).as_bytes());
    out
}

/// The prose with each kind's section, the list of `type:` values and the
/// Python agents' files the kinds take over put at their markers.
fn kinds(prose: &str) -> String {
    let sections: String = KINDS.iter().map(|kind| kind.manual).collect();
    let names: Vec<&str> = KINDS.iter().map(|kind| kind.name()).collect();
    // `.RB ( modbus ", " http " or " command ),`
    let mut types = String::from(".RB (");
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            types.push_str(if i + 1 == names.len() {
                " \" or \""
            } else {
                " \", \""
            });
        }
        types.push(' ');
        types.push_str(&escape(name));
    }
    types.push_str(" ),\n");
    let mut drop_ins = String::new();
    for kind in KINDS {
        for drop_in in kind.drop_ins {
            let _ = write!(
                drop_ins,
                ".TP\n.I {}\nOptional: the file of the Python agent {}, read as it is and run as a\n\
                 poller of type\n.B {}\nthat posts what the Python agent posts.\n",
                escape(drop_in.file_name),
                escape(drop_in.agent_program),
                escape(kind.name()),
            );
        }
    }
    prose
        .replacen(KINDS_MARKER, &sections, 1)
        .replacen(TYPES_MARKER, &types, 1)
        .replacen(DROP_INS_MARKER, &drop_ins, 1)
}

/// One command (and its own subcommands): its invocation, help and
/// options.
fn render_command(out: &mut Vec<u8>, parents: &[&str], command: &clap::Command) {
    let mut path: Vec<&str> = parents.to_vec();
    path.push(command.get_name());
    if command.has_subcommands() {
        for sub in command.get_subcommands().filter(|c| !c.is_hide_set()) {
            render_command(out, &path, sub);
        }
        return;
    }
    let mut usage = format!(".TP\n.B {}", escape(&path.join(" ")));
    let arguments: Vec<&clap::Arg> = command
        .get_arguments()
        .filter(|a| !a.is_hide_set() && !a.is_global_set())
        .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
        .collect();
    for arg in &arguments {
        usage.push(' ');
        usage.push_str(&synopsis(arg));
    }
    let _ = writeln!(out, "{usage}");
    let help = command
        .get_long_about()
        .or(command.get_about())
        .map(ToString::to_string)
        .unwrap_or_default();
    let _ = writeln!(out, "{}", escape(&help));
    if arguments.is_empty() {
        return;
    }
    let _ = writeln!(out, ".RS");
    for arg in arguments {
        let _ = writeln!(out, ".TP\n{}", synopsis(arg));
        let help = arg
            .get_long_help()
            .or(arg.get_help())
            .map(ToString::to_string)
            .unwrap_or_default();
        if !help.is_empty() {
            let _ = writeln!(out, "{}", escape(&help));
        }
        if !arg.get_action().takes_values() {
            continue;
        }
        let values: Vec<String> = arg
            .get_possible_values()
            .iter()
            .filter(|v| !v.is_hide_set())
            .map(|v| v.get_name().to_owned())
            .collect();
        if !values.is_empty() {
            let _ = writeln!(out, ".br\nOne of: {}.", escape(&values.join(", ")));
        }
    }
    let _ = writeln!(out, ".RE");
}

/// `\fB\-\-older\-than\fR \fIDURATION\fR`, `\fISHELL\fR` or `[\fB\-\-yes\fR]`.
fn synopsis(arg: &clap::Arg) -> String {
    let value = arg
        .get_value_names()
        .and_then(|names| names.first())
        .map(|name| format!("\\fI{}\\fR", escape(name)));
    let flag_takes_value = arg.get_action().takes_values();
    match arg.get_long() {
        Some(long) => {
            let flag = format!("\\fB\\-\\-{}\\fR", escape(long));
            match (value, flag_takes_value) {
                (Some(value), true) if arg.is_required_set() => format!("{flag} {value}"),
                (Some(value), true) => format!("[{flag} {value}]"),
                _ => format!("[{flag}]"),
            }
        }
        None => value.unwrap_or_else(|| format!("\\fI{}\\fR", escape(arg.get_id().as_str()))),
    }
}

/// Escapes text for roff: backslashes and hyphens, and a leading period or
/// quote that would start a request.
fn escape(text: &str) -> String {
    let text = text.replace('\\', "\\e").replace('-', "\\-");
    text.lines()
        .map(|line| {
            if line.starts_with('.') || line.starts_with('\'') {
                format!("\\&{line}")
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_visible_command_and_option_is_on_the_page() {
        let page = String::from_utf8(render()).unwrap();
        let title = format!(
            ".TH pattoo-agentd 1 {} pattoo-agentd \"User Commands\"",
            env!("CARGO_PKG_VERSION")
        );
        assert!(page.contains(&title), "no {title:?} in\n{page}");
        for text in [
            ".B pattoo\\-agentd run",
            ".B pattoo\\-agentd check",
            ".B pattoo\\-agentd once [\\fB\\-\\-print\\fR] [\\fB\\-\\-poller\\fR \\fINAME\\fR]",
            ".B pattoo\\-agentd cache status",
            ".B pattoo\\-agentd cache replay",
            ".B pattoo\\-agentd cache purge \\fB\\-\\-older\\-than\\fR \\fIDURATION\\fR [\\fB\\-\\-yes\\fR]",
            ".B pattoo\\-agentd receive \\fB\\-\\-listen\\fR \\fIADDR\\fR \\fB\\-\\-dir\\fR \\fIDIR\\fR",
            ".B pattoo\\-agentd completions \\fISHELL\\fR",
            #[cfg(feature = "bacnet")]
            ".B pattoo\\-agentd discover bacnet [",
            "\\-\\-config\\-dir",
            ".SH CONFIGURATION",
        ] {
            assert!(page.contains(text), "no {text:?} in\n{page}");
        }
        assert!(
            !page.contains("pattoo\\-agentd man"),
            "the hidden command is listed"
        );
    }

    #[test]
    fn every_poller_kind_has_its_section_and_its_type_on_the_page() {
        let page = String::from_utf8(render()).unwrap();
        assert!(!page.contains("@GENERATED"), "a marker is left in\n{page}");
        for kind in KINDS {
            let title = kind.manual.lines().next().unwrap();
            assert!(
                title.starts_with(".SH ") && title.ends_with(" POLLERS"),
                "the {} kind's manual text starts with {title:?}, not its .SH line",
                kind.name()
            );
            assert_eq!(page.matches(title).count(), 1, "{title:?} in\n{page}");
            for drop_in in kind.drop_ins {
                let file = format!(".I {}\n", escape(drop_in.file_name));
                assert!(page.contains(&file), "no {file:?} in\n{page}");
            }
            assert!(
                page.contains(&format!(".BR \"type: {}\" .", kind.name()))
                    || page.contains(&format!(".BR \"type: {}\" ,", kind.name())),
                "the {} section does not start with its type:",
                kind.name()
            );
        }
        let names: Vec<&str> = KINDS.iter().map(|kind| kind.name()).collect();
        let types = match names.as_slice() {
            [one] => format!(".RB ( {one} ),"),
            [first @ .., last] => format!(".RB ( {} \" or \" {last} ),", first.join(" \", \" ")),
            [] => unreachable!("a build has at least one kind"),
        };
        assert!(page.contains(&types), "no {types:?} in\n{page}");
    }
}
