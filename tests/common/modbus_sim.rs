//! An in-process Modbus TCP device for tests, built on tokio-modbus's
//! server: several unit ids, counters for requests and accepted
//! connections, addresses that answer exception 2, a mode in which it never
//! answers, and a restart that drops every open connection.
//!
//! It listens on 127.0.0.1 port 0 and is bound before `start` returns, so a
//! test can connect at once without waiting.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_modbus::server::tcp::{accept_tcp_connection, Server};
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};

/// The four tables of one unit; unset addresses read as zero.
#[derive(Debug, Default, Clone)]
pub struct Unit {
    pub coils: HashMap<u16, bool>,
    pub discrete_inputs: HashMap<u16, bool>,
    pub input_registers: HashMap<u16, u16>,
    pub holding_registers: HashMap<u16, u16>,
}

impl Unit {
    /// Puts `words` into the input registers from zero-based `start`.
    pub fn input(mut self, start: u16, words: &[u16]) -> Self {
        for (i, w) in words.iter().enumerate() {
            self.input_registers.insert(start + i as u16, *w);
        }
        self
    }

    pub fn holding(mut self, start: u16, words: &[u16]) -> Self {
        for (i, w) in words.iter().enumerate() {
            self.holding_registers.insert(start + i as u16, *w);
        }
        self
    }

    pub fn coil(mut self, address: u16, on: bool) -> Self {
        self.coils.insert(address, on);
        self
    }

    pub fn discrete(mut self, address: u16, on: bool) -> Self {
        self.discrete_inputs.insert(address, on);
        self
    }
}

/// One request as the device saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub unit: u8,
    pub function: u8,
    pub start: u16,
    pub count: u16,
}

#[derive(Debug, Default)]
pub struct State {
    units: Mutex<HashMap<u8, Unit>>,
    /// (function code, zero-based address) pairs that answer exception 2
    /// when a read covers them.
    illegal: Mutex<HashSet<(u8, u16)>>,
    silent: AtomicBool,
    /// Units that never answer, while the others do (a dead device behind
    /// a live gateway).
    silent_units: Mutex<HashSet<u8>>,
    requests: AtomicUsize,
    connections: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
    /// Clones of every accepted socket, so a restart can close them.
    sockets: Mutex<Vec<std::net::TcpStream>>,
}

pub struct Sim {
    pub addr: SocketAddr,
    state: Arc<State>,
    server: JoinHandle<()>,
}

impl Sim {
    pub async fn start(units: impl IntoIterator<Item = (u8, Unit)>) -> Sim {
        let state = Arc::new(State::default());
        state.units.lock().unwrap().extend(units);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = serve(listener, state.clone());
        Sim {
            addr,
            state,
            server,
        }
    }

    /// `127.0.0.1:PORT`, as a target address.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Reads of `function` covering zero-based `address` answer exception 2.
    pub fn refuse(&self, function: u8, address: u16) {
        self.state
            .illegal
            .lock()
            .unwrap()
            .insert((function, address));
    }

    /// From now on, requests are read but never answered.
    pub fn go_silent(&self) {
        self.state.silent.store(true, Ordering::SeqCst);
    }

    /// Ends `go_silent`: requests on new connections are answered again.
    pub fn answer_again(&self) {
        self.state.silent.store(false, Ordering::SeqCst);
    }

    /// Makes one unit stop answering; the others still do.
    pub fn silence_unit(&self, unit: u8) {
        self.state.silent_units.lock().unwrap().insert(unit);
    }

    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Stops listening, closes every open connection, and listens again on
    /// the same port, as a device does when it reboots.
    pub async fn restart(&mut self) {
        self.server.abort();
        let _ = (&mut self.server).await;
        for socket in self.state.sockets.lock().unwrap().drain(..) {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.server = serve(listener, self.state.clone());
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.server.abort();
        for socket in self.state.sockets.lock().unwrap().drain(..) {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn serve(listener: TcpListener, state: Arc<State>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let server = Server::new(listener);
        let on_connected = |stream: TcpStream, socket_addr: SocketAddr| {
            let state = state.clone();
            async move {
                state.connections.fetch_add(1, Ordering::SeqCst);
                let std_stream = stream.into_std()?;
                state.sockets.lock().unwrap().push(std_stream.try_clone()?);
                let stream = TcpStream::from_std(std_stream)?;
                accept_tcp_connection(stream, socket_addr, |_| {
                    Ok(Some(Device {
                        state: state.clone(),
                    }))
                })
            }
        };
        let _ = server.serve(&on_connected, |_error| {}).await;
    })
}

struct Device {
    state: Arc<State>,
}

type Answer = Pin<Box<dyn Future<Output = Result<Response, ExceptionCode>> + Send>>;

impl tokio_modbus::server::Service for Device {
    type Request = SlaveRequest<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = Answer;

    fn call(&self, request: Self::Request) -> Self::Future {
        let state = &self.state;
        state.requests.fetch_add(1, Ordering::SeqCst);
        let unit = request.slave;
        let (function, start, count) = match &request.request {
            Request::ReadCoils(a, c) => (1, *a, *c),
            Request::ReadDiscreteInputs(a, c) => (2, *a, *c),
            Request::ReadHoldingRegisters(a, c) => (3, *a, *c),
            Request::ReadInputRegisters(a, c) => (4, *a, *c),
            _ => return Box::pin(async { Err(ExceptionCode::IllegalFunction) }),
        };
        state.seen.lock().unwrap().push(Seen {
            unit,
            function,
            start,
            count,
        });
        if state.silent.load(Ordering::SeqCst) || state.silent_units.lock().unwrap().contains(&unit)
        {
            return Box::pin(std::future::pending());
        }
        let answer = (|| {
            let units = state.units.lock().unwrap();
            let Some(device) = units.get(&unit) else {
                return Err(ExceptionCode::GatewayTargetDevice);
            };
            let illegal = state.illegal.lock().unwrap();
            let range = start..start.saturating_add(count);
            if range.clone().any(|a| illegal.contains(&(function, a))) {
                return Err(ExceptionCode::IllegalDataAddress);
            }
            let bits = |table: &HashMap<u16, bool>| -> Vec<bool> {
                range
                    .clone()
                    .map(|a| table.get(&a).copied().unwrap_or(false))
                    .collect()
            };
            let words = |table: &HashMap<u16, u16>| -> Vec<u16> {
                range
                    .clone()
                    .map(|a| table.get(&a).copied().unwrap_or(0))
                    .collect()
            };
            Ok(match function {
                1 => Response::ReadCoils(bits(&device.coils)),
                2 => Response::ReadDiscreteInputs(bits(&device.discrete_inputs)),
                3 => Response::ReadHoldingRegisters(words(&device.holding_registers)),
                _ => Response::ReadInputRegisters(words(&device.input_registers)),
            })
        })();
        Box::pin(async move { answer })
    }
}
