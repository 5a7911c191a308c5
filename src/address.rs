//! Network addresses as operators write and read them; a leaf every layer
//! may use (delivery and pollers name the servers and devices they reach).

/// `host:port`, with an IPv6 literal in brackets.
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_ipv6_literal_is_bracketed_and_other_hosts_are_not() {
        assert_eq!(super::host_port("::1", 20201), "[::1]:20201");
        assert_eq!(
            super::host_port("pattoo.example.org", 20201),
            "pattoo.example.org:20201"
        );
        assert_eq!(super::host_port("10.0.0.5", 502), "10.0.0.5:502");
    }
}
