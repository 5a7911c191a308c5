//! Debian's Net-SNMP agent (`snmpd`, installed by `.ci/run`) on a loopback
//! port the OS picks, with a generated snmpd.conf: a v2c community and an
//! SNMPv3 authPriv user, both read-only. It serves this host's own MIB
//! (system group, IF-MIB over the live interfaces).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const COMMUNITY: &str = "pattoo-ro";
pub const V3_USER: &str = "pattoo-v3";
pub const V3_AUTH: &str = "authpass123";
pub const V3_PRIV: &str = "privpass123";

pub struct NetSnmpd {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for NetSnmpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn snmpd() -> &'static str {
    ["/usr/sbin/snmpd", "/usr/local/sbin/snmpd"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("snmpd is installed (`apt-get install snmpd`; .ci/run does it)")
}

impl NetSnmpd {
    pub fn start() -> NetSnmpd {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("snmpd.conf");
        std::fs::write(
            &conf,
            format!(
                "agentAddress udp:127.0.0.1:0\n\
                 rocommunity {COMMUNITY} 127.0.0.1\n\
                 createUser {V3_USER} SHA-256 {V3_AUTH} AES {V3_PRIV}\n\
                 rouser {V3_USER} priv\n"
            ),
        )
        .unwrap();
        let child = Command::new(snmpd())
            .args(["-f", "-C", "-c"])
            .arg(&conf)
            .arg("-Lf")
            .arg(dir.path().join("log"))
            .env("SNMP_PERSISTENT_DIR", dir.path().join("persist"))
            .env("MIBS", "")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("snmpd starts");
        let mut agent = NetSnmpd {
            child,
            port: 0,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ports = super::snmpsim::bound_ports(agent.child.id());
            if let Some(port) = ports.get(&std::net::Ipv4Addr::LOCALHOST) {
                agent.port = *port;
                return agent;
            }
            if let Some(status) = agent.child.try_wait().unwrap() {
                let log =
                    std::fs::read_to_string(agent._dir.path().join("log")).unwrap_or_default();
                panic!("snmpd exited with {status} before listening:\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "snmpd did not listen within 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}
