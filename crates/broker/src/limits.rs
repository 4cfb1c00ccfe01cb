//! Limits against abuse: how many RPC streams a broker holds open, in all and per client
//! connection, and how many of them are `List` watches and reads. A call over a limit is
//! refused at once with `RESOURCE_EXHAUSTED` naming the limit and its flag, and changes
//! nothing; a permit is held for as long as the call's stream is open.
//!
//! `Replicate` streams are not counted (a flood of clients must not stop replication, and
//! only holders of the REPLICATE capability open them), and requests proxied by another
//! broker count toward the broker's limits but not toward a connection's (one peer
//! connection carries the proxied calls of many clients).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// The limits (`folio serve --max-*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Streams (calls) open at once on this broker (`--max-streams`).
    pub streams: usize,
    /// Streams open at once on one client connection (`--max-streams-per-connection`).
    pub streams_per_connection: usize,
    /// `List` watches open at once (`--max-list-watches`).
    pub list_watches: usize,
    /// Reads open at once, blocking ones waiting for content included (`--max-reads`).
    pub reads: usize,
    /// Client connections open at once, on the gRPC and HTTP ports together
    /// (`--max-connections`); further connections wait in the listen backlog.
    pub connections: usize,
    /// HTTP/2 receive window of one stream, in bytes (`--http2-stream-window`).
    pub stream_window: u32,
    /// HTTP/2 receive window of one connection, all its streams together, in bytes
    /// (`--http2-connection-window`): the most a connection's peer may have sent that the
    /// broker has not read yet.
    pub connection_window: u32,
    /// Largest HTTP/2 frame a client may send the broker, in bytes
    /// (`--http2-max-frame-size`). HTTP/2's default, 16 KiB, cuts every 16 KiB append in
    /// two frames, each a separate pass through h2 and the gRPC decoder; bigger frames
    /// carry an append whole, up to the stream's window.
    pub frame_size: u32,
}

impl Limits {
    /// The defaults of `folio serve`.
    pub const DEFAULT: Self = Self {
        streams: 4096,
        streams_per_connection: 1024,
        list_watches: 256,
        reads: 2048,
        connections: 128,
        stream_window: 256 << 10,
        connection_window: 2 << 20,
        frame_size: 256 << 10,
    };

    /// Memory the open connections may hold in received content the broker has not read
    /// yet: every connection's HTTP/2 window (at least [`HTTP_PORT_WINDOW`] with an HTTP
    /// port, whose connections count too), at the most connections. It is set aside from
    /// the memory budget, so spools get the rest.
    pub fn window_memory(&self, http_port: bool) -> usize {
        let mut window = self.connection_window as usize;
        if http_port {
            window = window.max(HTTP_PORT_WINDOW);
        }
        self.connections.saturating_mul(window)
    }

    /// Checks the limits against a memory budget of `budget` bytes: the windows' memory
    /// may take at most half of it. The error names the flags and their values.
    pub fn check(&self, budget: usize, http_port: bool) -> Result<(), String> {
        if self.connections == 0 {
            return Err("--max-connections: 0 admits no client; at least 1".into());
        }
        for (flag, window) in [
            ("--http2-stream-window", self.stream_window),
            ("--http2-connection-window", self.connection_window),
        ] {
            if window < MIN_WINDOW {
                return Err(format!(
                    "{flag}: {window} bytes is below HTTP/2's smallest window, {MIN_WINDOW} bytes"
                ));
            }
        }
        if !(MIN_FRAME..=MAX_FRAME).contains(&self.frame_size) {
            return Err(format!(
                "--http2-max-frame-size: {} bytes is outside HTTP/2's frame sizes, {MIN_FRAME} to {MAX_FRAME} bytes",
                self.frame_size
            ));
        }
        if self.stream_window > self.connection_window {
            return Err(format!(
                "--http2-stream-window: {} bytes is larger than --http2-connection-window ({} bytes), \
                 which holds all of a connection's streams",
                self.stream_window, self.connection_window
            ));
        }
        let windows = self.window_memory(http_port);
        if windows > budget / 2 {
            return Err(format!(
                "--max-connections: {} connections x {} bytes of HTTP/2 window = {windows} bytes, \
                 more than half of --memory-budget ({budget} bytes); lower --max-connections or \
                 --http2-connection-window, or raise --memory-budget",
                self.connections,
                windows / self.connections,
            ));
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The HTTP/2 connection window of the HTTP port (hyper's default; an HTTP/1.1
/// connection buffers less): a connection there may hold this much unread.
pub const HTTP_PORT_WINDOW: usize = 1 << 20;

/// The smallest HTTP/2 window (the protocol's default).
pub const MIN_WINDOW: u32 = 65_535;

/// HTTP/2's smallest and largest frame sizes (RFC 9113, SETTINGS_MAX_FRAME_SIZE).
pub const MIN_FRAME: u32 = 16_384;
/// See [`MIN_FRAME`].
pub const MAX_FRAME: u32 = (1 << 24) - 1;

/// What a call is, for its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Call {
    /// A `List` with `watch`.
    Watch,
    /// A `Read`.
    Read,
    /// Any other counted call.
    Other,
}

/// The streams open now, against [`Limits`].
#[derive(Debug, Default)]
pub(crate) struct Gate {
    limits: Option<Limits>,
    streams: AtomicUsize,
    watches: AtomicUsize,
    reads: AtomicUsize,
    per_connection: Mutex<HashMap<SocketAddr, usize>>,
}

/// A call's place under the limits, given back when dropped (when its stream ends).
#[derive(Debug)]
pub(crate) struct Permit {
    gate: Arc<Gate>,
    call: Call,
    connection: Option<SocketAddr>,
}

impl Gate {
    pub(crate) fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            limits: Some(limits),
            ..Self::default()
        })
    }

    /// Admits a call of kind `call` from `connection` (`None` for a call proxied by a
    /// peer, or from an unknown address), or refuses it naming the limit it would pass.
    pub(crate) fn admit(
        self: &Arc<Self>,
        call: Call,
        connection: Option<SocketAddr>,
    ) -> Result<Permit, tonic::Status> {
        let none = || Permit {
            gate: self.clone(),
            call: Call::Other,
            connection: None,
        };
        let Some(limits) = self.limits else {
            return Ok(none());
        };
        let taken = |counter: &AtomicUsize, limit: usize| {
            counter
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < limit).then_some(n + 1)
                })
                .is_ok()
        };
        if !taken(&self.streams, limits.streams) {
            return Err(exhausted(
                "streams open on this broker",
                limits.streams,
                "--max-streams",
            ));
        }
        // From here the permit gives back what it took, whatever fails next.
        let mut permit = none();
        if let Some(addr) = connection {
            let mut open = self
                .per_connection
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let count = open.entry(addr).or_default();
            if *count >= limits.streams_per_connection {
                if *count == 0 {
                    open.remove(&addr);
                }
                return Err(exhausted(
                    "streams open on this connection",
                    limits.streams_per_connection,
                    "--max-streams-per-connection",
                ));
            }
            *count += 1;
            permit.connection = Some(addr);
        }
        let (counter, limit, what, flag) = match call {
            Call::Watch => (
                &self.watches,
                limits.list_watches,
                "List watches open",
                "--max-list-watches",
            ),
            Call::Read => (&self.reads, limits.reads, "reads open", "--max-reads"),
            Call::Other => return Ok(permit),
        };
        if !taken(counter, limit) {
            return Err(exhausted(what, limit, flag));
        }
        permit.call = call;
        Ok(permit)
    }

    /// Streams open now: in all, on connections, watches and reads.
    #[cfg(test)]
    fn open(&self) -> (usize, usize, usize, usize) {
        let connections = self
            .per_connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .sum();
        (
            self.streams.load(Ordering::Acquire),
            connections,
            self.watches.load(Ordering::Acquire),
            self.reads.load(Ordering::Acquire),
        )
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let gate = &self.gate;
        if gate.limits.is_none() {
            return;
        }
        gate.streams.fetch_sub(1, Ordering::AcqRel);
        if let Some(addr) = self.connection {
            let mut open = gate
                .per_connection
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(count) = open.get_mut(&addr) {
                *count -= 1;
                if *count == 0 {
                    open.remove(&addr);
                }
            }
        }
        match self.call {
            Call::Watch => gate.watches.fetch_sub(1, Ordering::AcqRel),
            Call::Read => gate.reads.fetch_sub(1, Ordering::AcqRel),
            Call::Other => 0,
        };
    }
}

fn exhausted(what: &str, limit: usize, flag: &str) -> tonic::Status {
    tonic::Status::resource_exhausted(format!(
        "this broker already has {limit} {what}, its limit ({flag}={limit}); retry later, \
         or raise {flag}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> Option<SocketAddr> {
        Some(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    #[test]
    fn each_limit_refuses_by_name_and_permits_give_back_what_they_took() {
        let gate = Gate::new(Limits {
            streams: 4,
            streams_per_connection: 2,
            list_watches: 1,
            reads: 2,
            ..Limits::DEFAULT
        });
        let a = gate.admit(Call::Watch, addr(1)).expect("first");
        let b = gate
            .admit(Call::Read, addr(1))
            .expect("second on the connection");
        let err = gate
            .admit(Call::Other, addr(1))
            .expect_err("third on the connection");
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(
            err.message().contains("--max-streams-per-connection=2"),
            "{err:?}"
        );
        let err = gate.admit(Call::Watch, addr(2)).expect_err("second watch");
        assert!(err.message().contains("--max-list-watches=1"), "{err:?}");
        let c = gate.admit(Call::Read, None).expect("a proxied read");
        let err = gate.admit(Call::Read, addr(3)).expect_err("third read");
        assert!(err.message().contains("--max-reads=2"), "{err:?}");
        let d = gate.admit(Call::Other, addr(3)).expect("fourth stream");
        let err = gate.admit(Call::Other, None).expect_err("fifth stream");
        assert!(err.message().contains("--max-streams=4"), "{err:?}");
        assert_eq!(gate.open(), (4, 3, 1, 2), "refusals took nothing");
        drop((a, b, c, d));
        assert_eq!(gate.open(), (0, 0, 0, 0));
        assert!(gate.per_connection.lock().expect("lock").is_empty());
        let _again = gate.admit(Call::Watch, addr(1)).expect("room again");
    }

    #[test]
    fn without_limits_everything_is_admitted() {
        let gate = Arc::new(Gate::default());
        let permits: Vec<_> = (0..10_000)
            .map(|i| gate.admit(Call::Read, addr(i % 3)).expect("admitted"))
            .collect();
        assert_eq!(permits.len(), 10_000);
    }
}
