//! Settings of a `type: os` poller.
//!
//! ```yaml
//! - name: this-host
//!   type: os
//!   partitions:                    # by mount point
//!     include: ["/", "/srv*"]      # default: every one
//!     exclude: ["*docker*"]        # default: mount points containing "docker"
//!   disks:                         # by /proc/diskstats name
//!     exclude: ["loop*", "ram*"]   # default: loop* and ram followed by digits
//!   nics:                          # by /proc/net/dev name
//!     exclude: ["veth*"]           # default: none
//!   post_extra_system_datapoints: false
//!   root_device_as_mounted: false
//! ```
//!
//! With no filter given, the poller posts exactly what the Python OS agents
//! post. `exclude` replaces the default exclusions; a name is kept when it
//! matches an `include` pattern (any, when there is none) and no `exclude`
//! pattern.

use serde::Deserialize;
use serde_norway::Value;

use super::host::glob_match;
use crate::yaml::{Document, YamlPath};

/// Which partitions, disks or network interfaces a poll reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// Patterns one of which a name must match; empty: every name.
    pub include: Vec<String>,
    /// Patterns no name may match; `None`: the Python agents' exclusions.
    pub exclude: Option<Vec<String>>,
}

/// The exclusion of the Python agents a filter keeps unless told otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PythonExclusion {
    /// Mount points containing `docker`.
    Docker,
    /// `ram` followed by digits only, and names starting with `loop`.
    RamAndLoop,
    /// Nothing.
    Nothing,
}

impl PythonExclusion {
    fn excludes(self, name: &str) -> bool {
        match self {
            PythonExclusion::Docker => name.contains("docker"),
            PythonExclusion::RamAndLoop => {
                name.strip_prefix("ram")
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                    || name.starts_with("loop")
            }
            PythonExclusion::Nothing => false,
        }
    }
}

impl Filter {
    /// Every name but those the Python agents leave out.
    pub const fn python() -> Filter {
        Filter {
            include: Vec::new(),
            exclude: None,
        }
    }

    /// Whether `name` is read; `python` is the exclusion the Python agents
    /// apply to this sort of name.
    pub fn keeps(&self, name: &str, python: PythonExclusion) -> bool {
        let included = self.include.is_empty() || self.include.iter().any(|p| glob_match(p, name));
        let excluded = match &self.exclude {
            None => python.excludes(name),
            Some(patterns) => patterns.iter().any(|p| glob_match(p, name)),
        };
        included && !excluded
    }

    fn is_python(&self) -> bool {
        self.include.is_empty() && self.exclude.is_none()
    }
}

/// A `type: os` poller's settings. [`OsSettings::default`] is what the
/// Python OS agents read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsSettings {
    /// Partitions by mount point.
    pub partitions: Filter,
    /// Disks by their `/proc/diskstats` name.
    pub disks: Filter,
    /// Network interfaces by their `/proc/net/dev` name.
    pub nics: Filter,
    /// Also post `process_count`, `load_average_01min`, `_05min`, `_15min`
    /// and `cpu_frequency`, which the Python agents compute and drop.
    pub post_extra_system_datapoints: bool,
    /// Post the root file system's device as mounted (`/dev/root`), as
    /// psutil before 5.9 did, instead of the real device.
    pub root_device_as_mounted: bool,
}

impl Default for OsSettings {
    fn default() -> Self {
        OsSettings {
            partitions: Filter::python(),
            disks: Filter::python(),
            nics: Filter::python(),
            post_extra_system_datapoints: false,
            root_device_as_mounted: false,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFilter {
    #[serde(default)]
    include: Vec<String>,
    exclude: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOs {
    partitions: Option<RawFilter>,
    disks: Option<RawFilter>,
    nics: Option<RawFilter>,
    #[serde(default)]
    post_extra_system_datapoints: bool,
    #[serde(default)]
    root_device_as_mounted: bool,
}

impl OsSettings {
    pub(crate) fn parse(doc: &mut Document, path: &YamlPath, value: &Value) -> Option<Self> {
        let raw: RawOs = doc.deserialize(path, value)?;
        let mut ok = true;
        let mut filter = |key: &str, raw: Option<RawFilter>| {
            let Some(raw) = raw else {
                return Filter::python();
            };
            for (list, patterns) in [("include", Some(&raw.include)), ("exclude", raw.exclude.as_ref())] {
                for (i, pattern) in patterns.into_iter().flatten().enumerate() {
                    if pattern.is_empty() {
                        doc.error(
                            &path.key(key).key(list).index(i),
                            "an empty pattern matches nothing; write a name or a pattern such as \"eth*\"",
                        );
                        ok = false;
                    }
                }
            }
            Filter {
                include: raw.include,
                exclude: raw.exclude,
            }
        };
        let partitions = filter("partitions", raw.partitions);
        let disks = filter("disks", raw.disks);
        let nics = filter("nics", raw.nics);
        ok.then_some(OsSettings {
            partitions,
            disks,
            nics,
            post_extra_system_datapoints: raw.post_extra_system_datapoints,
            root_device_as_mounted: raw.root_device_as_mounted,
        })
    }

    pub fn describe(&self) -> String {
        let mut text = "this host: CPU, memory, swap, partitions, disks and NICs".to_owned();
        for (what, filter) in [
            ("partitions", &self.partitions),
            ("disks", &self.disks),
            ("NICs", &self.nics),
        ] {
            if !filter.is_python() {
                text.push_str(&format!(
                    "; {what} filtered (include {:?}, exclude {})",
                    filter.include,
                    filter
                        .exclude
                        .as_ref()
                        .map_or_else(|| "as the Python agents".to_owned(), |e| format!("{e:?}"))
                ));
            }
        }
        if self.post_extra_system_datapoints {
            text.push_str("; also process count, load averages and CPU frequency");
        }
        if self.root_device_as_mounted {
            text.push_str("; root device as mounted");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> (Option<OsSettings>, Vec<String>) {
        let mut doc = Document::parse(std::path::Path::new("t.yaml"), yaml).unwrap();
        let root = doc.root.clone();
        let parsed = OsSettings::parse(&mut doc, &YamlPath::root(), &root);
        let errors = doc
            .into_errors()
            .iter()
            .map(|e| format!("{}: {}", e.path, e.message))
            .collect();
        (parsed, errors)
    }

    #[test]
    fn no_settings_read_what_the_python_agents_read() {
        let (parsed, errors) = parse("{}\n");
        assert!(errors.is_empty(), "{errors:?}");
        let settings = parsed.unwrap();
        assert_eq!(settings, OsSettings::default());
        let disks = &settings.disks;
        for (name, kept) in [
            ("vda", true),
            ("ram0", false),
            ("ram12", false),
            ("ramdisk", true),
            ("ram", true),
            ("loop0", false),
            ("zram0", true),
        ] {
            assert_eq!(disks.keeps(name, PythonExclusion::RamAndLoop), kept, "{name}");
        }
        assert!(!settings
            .partitions
            .keeps("/var/lib/docker/x", PythonExclusion::Docker));
        assert!(settings.nics.keeps("veth1234", PythonExclusion::Nothing));
    }

    #[test]
    fn exclude_replaces_the_python_exclusions_and_include_narrows() {
        let (parsed, errors) = parse(
            "nics: {exclude: [\"veth*\"]}\ndisks: {include: [\"sd?\", \"loop*\"], exclude: []}\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        let settings = parsed.unwrap();
        assert!(!settings.nics.keeps("veth1", PythonExclusion::Nothing));
        assert!(settings.nics.keeps("eth0", PythonExclusion::Nothing));
        assert!(settings.disks.keeps("loop0", PythonExclusion::RamAndLoop));
        assert!(settings.disks.keeps("sda", PythonExclusion::RamAndLoop));
        assert!(!settings.disks.keeps("sda1", PythonExclusion::RamAndLoop));
        assert!(settings.describe().contains("disks filtered"));
    }

    #[test]
    fn typos_and_empty_patterns_are_located_errors() {
        let (_, errors) = parse("nic: {}\n");
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("unknown field `nic`"), "{errors:?}");
        let (parsed, errors) = parse("partitions: {exclude: [\"\"]}\n");
        assert!(parsed.is_none());
        assert_eq!(
            errors,
            ["partitions.exclude[0]: an empty pattern matches nothing; write a name or a pattern such as \"eth*\""]
        );
    }
}
