//! The host name the agent posts under when none is configured: exactly
//! what the Python agents send, Python's `socket.getfqdn()`.
//!
//! The host name is part of every datapoint's checksum, so any other rule
//! gives every datapoint a new identity on the server. CPython 3.11 finds it
//! like this (`Lib/socket.py` `getfqdn`, `Modules/socketmodule.c`
//! `socket_gethostbyaddr` and `setipaddr`), and so does this module, through
//! the same C library calls so that `/etc/hosts`, `nsswitch.conf` and DNS
//! answer both programs alike:
//!
//! 1. `gethostname()`;
//! 2. turn it into one address: a numeric IPv4 or IPv6 address as it is
//!    (`inet_pton`), else the first address `getaddrinfo(name, NULL)` gives
//!    with no family, type or flags asked for;
//! 3. `gethostbyaddr_r()` on that address (a 16 KiB buffer, no retry);
//! 4. among the primary name and then the aliases, the first containing a
//!    `.`; if none does, the primary name (`localhost` when the host name
//!    is only on a `127.0.0.1` line that starts with `localhost`);
//! 5. if any step fails, the plain host name.
//!
//! Known differences, none of which a real host name meets: Python encodes a
//! non-ASCII host name with its IDNA 2003 codec before the lookup (here the
//! UTF-8 bytes are looked up), and Python raises instead of answering when
//! a label is empty or longer than 63 characters or a returned alias is not
//! UTF-8 (here the plain host name is used, or the alias decoded lossily).

use std::ffi::{CStr, CString};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use nix::libc;

/// The host name datapoints are posted under, and how it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostName {
    pub name: String,
    pub source: HostNameSource,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostNameSource {
    /// `hostname:` in `pattoo_agentd.yaml`.
    Configured,
    /// Found as Python's `socket.getfqdn()` finds it.
    Lookup {
        plain: String,
        address: IpAddr,
        primary: String,
        aliases: Vec<String>,
    },
    /// The lookup failed, so, as in Python, the plain host name.
    LookupFailed { reason: String },
}

impl fmt::Display for HostNameSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostNameSource::Configured => f.write_str("configured by `hostname:`"),
            HostNameSource::Lookup {
                plain,
                address,
                primary,
                aliases,
            } => {
                write!(
                    f,
                    "not configured; found like the Python agents' socket.getfqdn(): \
                     host name {plain:?} is {address}, which is {primary:?}"
                )?;
                if !aliases.is_empty() {
                    write!(f, " with aliases {aliases:?}")?;
                }
                Ok(())
            }
            HostNameSource::LookupFailed { reason } => write!(
                f,
                "not configured; the plain host name, as the Python agents' \
                 socket.getfqdn() gives it when the lookup fails ({reason})"
            ),
        }
    }
}

/// The host name to post as: the configured one, else Python's
/// `socket.getfqdn()`.
///
/// The lookup can take as long as the resolver's timeouts, so it is done
/// once per start or reload (and once per `check`) and the result passed
/// to everything that posts.
pub fn hostname(configured: Option<&str>) -> HostName {
    match configured {
        Some(name) => HostName {
            name: name.to_owned(),
            source: HostNameSource::Configured,
        },
        None => {
            #[cfg(test)]
            LOOKUPS.with(|count| count.set(count.get() + 1));
            getfqdn()
        }
    }
}

#[cfg(test)]
thread_local! {
    /// Lookups [`hostname`] made on this thread, for tests that check a
    /// start looks the name up once.
    pub static LOOKUPS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl HostName {
    /// Logs the name posted under and where it came from.
    pub fn log(&self) {
        tracing::info!(hostname = %self.name, "posting as host name {:?} ({})", self.name, self.source);
    }
}

/// Python's `socket.getfqdn()` with no argument.
pub fn getfqdn() -> HostName {
    // Python decodes the host name with the file system encoding
    // (UTF-8, undecodable bytes escaped); lossy decoding differs only for
    // host names that are not UTF-8.
    let plain = match nix::unistd::gethostname() {
        Ok(name) => name.to_string_lossy().into_owned(),
        Err(err) => {
            // Python raises here; an agent still needs a name to post under.
            return HostName {
                name: "localhost".to_owned(),
                source: HostNameSource::LookupFailed {
                    reason: format!("gethostname: {err}"),
                },
            };
        }
    };
    match gethostbyaddr(&plain) {
        Ok((address, primary, aliases)) => {
            let name = std::iter::once(&primary)
                .chain(&aliases)
                .find(|name| name.contains('.'))
                .unwrap_or(&primary)
                .clone();
            HostName {
                name,
                source: HostNameSource::Lookup {
                    plain,
                    address,
                    primary,
                    aliases,
                },
            }
        }
        Err(reason) => HostName {
            name: plain,
            source: HostNameSource::LookupFailed { reason },
        },
    }
}

/// Python's `socket.gethostbyaddr(name)`: the address, primary name and
/// aliases, or why the lookup failed.
fn gethostbyaddr(name: &str) -> Result<(IpAddr, String, Vec<String>), String> {
    check_idna_labels(name)?;
    let address = address_of(name)?;
    reverse(address).map(|(primary, aliases)| (address, primary, aliases))
}

/// The checks Python's `idna` codec makes on an ASCII name before the
/// lookup: every label but the last non-empty, every label under 64 bytes.
fn check_idna_labels(name: &str) -> Result<(), String> {
    if name.is_empty() || !name.is_ascii() {
        return Ok(());
    }
    let labels: Vec<&str> = name.split('.').collect();
    let (last, rest) = labels.split_last().expect("split yields one label");
    if rest.iter().any(|l| l.is_empty() || l.len() >= 64) || last.len() >= 64 {
        return Err(format!("{name:?} is not a valid IDNA name"));
    }
    Ok(())
}

/// CPython's `setipaddr(name, AF_UNSPEC)`.
fn address_of(name: &str) -> Result<IpAddr, String> {
    let c_name = CString::new(name).map_err(|_| format!("{name:?} contains a NUL byte"))?;
    if name.is_empty() {
        // The wildcard address, refused when it has more than one form.
        let hints = AddrInfoHints {
            socktype: libc::SOCK_DGRAM,
            flags: libc::AI_PASSIVE,
        };
        let all = getaddrinfo(None, Some(c"0"), &hints)?;
        return match all.as_slice() {
            [one] => Ok(*one),
            _ => Err("wildcard resolved to multiple address".to_owned()),
        };
    }
    if name == "<broadcast>" {
        return Ok(IpAddr::V4(Ipv4Addr::BROADCAST));
    }
    if let Some(v4) = inet_pton::<4>(libc::AF_INET, &c_name) {
        return Ok(IpAddr::V4(Ipv4Addr::from(v4)));
    }
    if !name.contains('%') {
        if let Some(v6) = inet_pton::<16>(libc::AF_INET6, &c_name) {
            return Ok(IpAddr::V6(Ipv6Addr::from(v6)));
        }
    }
    let hints = AddrInfoHints {
        socktype: 0,
        flags: 0,
    };
    getaddrinfo(Some(&c_name), None, &hints)?
        .into_iter()
        .next()
        .ok_or_else(|| format!("getaddrinfo({name:?}) gave no address"))
}

mod ffi {
    use nix::libc;

    extern "C" {
        pub fn inet_pton(
            af: libc::c_int,
            src: *const libc::c_char,
            dst: *mut libc::c_void,
        ) -> libc::c_int;
        pub fn gethostbyaddr_r(
            addr: *const libc::c_void,
            len: libc::socklen_t,
            af: libc::c_int,
            ret: *mut libc::hostent,
            buf: *mut libc::c_char,
            buflen: libc::size_t,
            result: *mut *mut libc::hostent,
            h_errnop: *mut libc::c_int,
        ) -> libc::c_int;
    }
}

fn inet_pton<const N: usize>(af: libc::c_int, name: &CStr) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    // SAFETY: `name` is NUL-terminated and `out` is as large as an address
    // of family `af` (4 bytes for AF_INET, 16 for AF_INET6).
    let parsed = unsafe { ffi::inet_pton(af, name.as_ptr(), out.as_mut_ptr().cast()) };
    (parsed > 0).then_some(out)
}

struct AddrInfoHints {
    socktype: libc::c_int,
    flags: libc::c_int,
}

/// Every IPv4 and IPv6 address `getaddrinfo` gives, in its order.
fn getaddrinfo(
    node: Option<&CStr>,
    service: Option<&CStr>,
    hints: &AddrInfoHints,
) -> Result<Vec<IpAddr>, String> {
    // SAFETY: all-zero is a valid `addrinfo` (null pointers, AF_UNSPEC).
    let mut c_hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    c_hints.ai_family = libc::AF_UNSPEC;
    c_hints.ai_socktype = hints.socktype;
    c_hints.ai_flags = hints.flags;
    let mut res: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: the strings are NUL-terminated or null, `res` receives a list
    // freed below with `freeaddrinfo`.
    let error = unsafe {
        libc::getaddrinfo(
            node.map_or(std::ptr::null(), CStr::as_ptr),
            service.map_or(std::ptr::null(), CStr::as_ptr),
            &c_hints,
            &mut res,
        )
    };
    if error != 0 {
        // SAFETY: gai_strerror returns a static NUL-terminated string.
        let message = unsafe { CStr::from_ptr(libc::gai_strerror(error)) };
        return Err(format!(
            "getaddrinfo({:?}): {}",
            node.map(CStr::to_string_lossy).unwrap_or_default(),
            message.to_string_lossy()
        ));
    }
    let mut addresses = Vec::new();
    let mut cursor = res;
    while !cursor.is_null() {
        // SAFETY: `cursor` walks the list getaddrinfo returned; each
        // `ai_addr` points at a sockaddr of the family it names.
        unsafe {
            let info = &*cursor;
            if !info.ai_addr.is_null() {
                match info.ai_family {
                    libc::AF_INET => {
                        let sin = &*(info.ai_addr as *const libc::sockaddr_in);
                        addresses.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                            sin.sin_addr.s_addr,
                        ))));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(info.ai_addr as *const libc::sockaddr_in6);
                        addresses.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
                    }
                    _ => {}
                }
            }
            cursor = info.ai_next;
        }
    }
    // SAFETY: `res` came from a successful getaddrinfo and is freed once.
    unsafe { libc::freeaddrinfo(res) };
    if addresses.is_empty() {
        return Err("getaddrinfo gave no IPv4 or IPv6 address".to_owned());
    }
    Ok(addresses)
}

/// `gethostbyaddr_r` on `address`: its primary name and aliases.
fn reverse(address: IpAddr) -> Result<(String, Vec<String>), String> {
    let (bytes, af): (Vec<u8>, libc::c_int) = match address {
        IpAddr::V4(v4) => (v4.octets().to_vec(), libc::AF_INET),
        IpAddr::V6(v6) => (v6.octets().to_vec(), libc::AF_INET6),
    };
    // CPython's buffer: 16384 bytes, of which it offers 16383.
    let mut buf = vec![0 as libc::c_char; 16384];
    // SAFETY: all-zero is a valid `hostent` (null pointers).
    let mut entry: libc::hostent = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::hostent = std::ptr::null_mut();
    let mut h_errno: libc::c_int = 0;
    // SAFETY: every pointer is valid for the lengths given; on success
    // `result` points at `entry`, whose strings live in `buf`.
    unsafe {
        ffi::gethostbyaddr_r(
            bytes.as_ptr().cast(),
            bytes.len() as libc::socklen_t,
            af,
            &mut entry,
            buf.as_mut_ptr(),
            buf.len() - 1,
            &mut result,
            &mut h_errno,
        );
    }
    if result.is_null() {
        return Err(format!(
            "gethostbyaddr({address}): {}",
            match h_errno {
                1 => "unknown host",
                2 => "host name lookup failure",
                3 => "unknown server error",
                4 => "no address associated with name",
                _ => "lookup failed",
            }
        ));
    }
    // SAFETY: `result` is non-null and points at `entry`; its strings and
    // alias list are NUL-terminated and live in `buf`.
    unsafe {
        let entry = &*result;
        if entry.h_addrtype != af {
            return Err(format!(
                "gethostbyaddr({address}): address family not supported"
            ));
        }
        let primary = CStr::from_ptr(entry.h_name).to_string_lossy().into_owned();
        let mut aliases = Vec::new();
        if !entry.h_aliases.is_null() {
            let mut alias = entry.h_aliases;
            while !(*alias).is_null() {
                aliases.push(CStr::from_ptr(*alias).to_string_lossy().into_owned());
                alias = alias.add(1);
            }
        }
        Ok((primary, aliases))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_name_is_used_as_it_is() {
        let name = hostname(Some("gw1.example.org"));
        assert_eq!(name.name, "gw1.example.org");
        assert_eq!(name.source, HostNameSource::Configured);
    }

    #[test]
    fn numeric_addresses_are_taken_as_they_are() {
        assert_eq!(
            address_of("127.0.0.1").unwrap(),
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        );
        assert_eq!(address_of("::1").unwrap(), IpAddr::V6(Ipv6Addr::LOCALHOST));
        assert_eq!(
            address_of("<broadcast>").unwrap(),
            IpAddr::V4(Ipv4Addr::BROADCAST)
        );
    }

    #[test]
    fn names_python_cannot_encode_are_refused_before_the_lookup() {
        assert!(check_idna_labels("a..b").is_err());
        assert!(check_idna_labels(&"x".repeat(64)).is_err());
        assert!(check_idna_labels("box.example.").is_ok());
        assert!(check_idna_labels(&"x".repeat(63)).is_ok());
    }
}
