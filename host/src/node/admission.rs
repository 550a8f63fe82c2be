//! Admission: whether a request may have an instance now, and whether a
//! client may open another connection.
//!
//! Invariant: no function holds more than its share of the node's instance
//! slots or memory budget, and no client address more than its share of
//! requests in flight or of connections, however it behaves; a request past
//! a limit is refused with 503 naming the limit *before* it costs an
//! instance. Without this, one client of one function could take every slot
//! of the node (sixty connections that send a request's headers and dribble
//! its body did, at `--max-instances 50`), and every other function would
//! answer 503.
//!
//! Everything is counted with atomics reserved up front and given back
//! when the [`Admitted`] ticket (or [`Connected`]) drops, which is when the
//! request's instance is gone: a refused reservation rolls back what it
//! took, so counts never drift. A request reserves, in the node's units:
//! its component's *weight* in instance slots (a component with more
//! memories or tables than the pool plans per instance takes more slots,
//! see [`weight_of`]) and its linear-memory limit (`memory-mib` times its
//! memories) from the memory budget. Reserving limits rather than use is
//! what makes the memory budget a guarantee: the node cannot be driven
//! past it, whatever its guests do with their linear memory.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The share of the node (instance slots and memory budget) one function
/// may hold unless the operator says otherwise, in percent.
pub const DEFAULT_FUNCTION_SHARE_PERCENT: u32 = 50;
/// The share of the node's instance slots one client address may hold in
/// requests at once unless the operator says otherwise, in percent.
pub const DEFAULT_CLIENT_SHARE_PERCENT: u32 = 25;
/// Connections one client address may hold open at once unless the
/// operator says otherwise.
pub const DEFAULT_CLIENT_CONNECTIONS: u32 = 512;
/// The fraction of the machine's memory (or of the cgroup's limit, if
/// lower) the default memory budget takes, in percent.
pub const DEFAULT_MEMORY_BUDGET_PERCENT: u64 = 75;

/// The limits a node admits requests under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Instance slots of the node (its pool's component instances).
    pub slots: u32,
    /// Bytes of linear memory the node's requests may reserve at once.
    pub memory_budget: u64,
    /// The most of `slots` and of `memory_budget` one function may hold,
    /// in percent.
    pub function_share_percent: u32,
    /// Instance slots one client address may hold at once (a request
    /// takes its component's weight).
    pub client_requests: u32,
    /// Connections one client address may hold open at once.
    pub client_connections: u32,
}

impl Limits {
    /// The defaults for a node with `slots` instance slots on a machine
    /// with `memory` bytes available to it.
    pub fn defaults(slots: u32, memory: u64) -> Self {
        Self {
            slots,
            memory_budget: memory / 100 * DEFAULT_MEMORY_BUDGET_PERCENT,
            function_share_percent: DEFAULT_FUNCTION_SHARE_PERCENT,
            client_requests: percent_of(slots, DEFAULT_CLIENT_SHARE_PERCENT),
            client_connections: DEFAULT_CLIENT_CONNECTIONS,
        }
    }

    /// Slots one function may hold.
    pub fn function_slots(&self) -> u32 {
        percent_of(self.slots, self.function_share_percent)
    }

    /// Memory one function may hold.
    pub fn function_memory(&self) -> u64 {
        // In u128, so that 100 % is the whole budget exactly (dividing
        // first rounded it down, and the refusal then named the function's
        // share rather than the node's).
        (u128::from(self.memory_budget) * u128::from(self.function_share_percent.min(100)) / 100)
            as u64
    }
}

/// `percent` of `total`, at least 1.
fn percent_of(total: u32, percent: u32) -> u32 {
    (u64::from(total) * u64::from(percent.min(100)) / 100).max(1) as u32
}

/// The memory this process may use: the machine's, or its cgroup's limit if
/// that is lower. `None` where neither can be read.
pub fn machine_memory() -> Option<u64> {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        })
        .map(|kib| kib * 1024);
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok());
    match (total, cgroup) {
        (Some(t), Some(c)) => Some(t.min(c)),
        (t, c) => t.or(c),
    }
}

/// Which limit refused a request or a connection: what 503s and the log
/// name, and the `limit` label of `keyhole_requests_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The function runs as many requests as its manifest's
    /// `max-concurrency` allows.
    FunctionConcurrency,
    /// The function holds its share of the node's slots or memory.
    FunctionShare,
    /// The client address holds its share of instance slots.
    ClientRequests,
    /// The client address holds its share of connections.
    ClientConnections,
    /// Every instance slot of the node is taken.
    NodeSlots,
    /// The node's memory budget is taken.
    NodeMemory,
    /// The request body arrived slower than the floor rate (408).
    SlowBody,
}

impl Limit {
    /// Every limit, in the order metrics list them.
    pub const ALL: [Limit; 7] = [
        Limit::FunctionConcurrency,
        Limit::FunctionShare,
        Limit::ClientRequests,
        Limit::ClientConnections,
        Limit::NodeSlots,
        Limit::NodeMemory,
        Limit::SlowBody,
    ];

    /// Its name in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::FunctionConcurrency => "function-concurrency",
            Limit::FunctionShare => "function-share",
            Limit::ClientRequests => "client-requests",
            Limit::ClientConnections => "client-connections",
            Limit::NodeSlots => "node-slots",
            Limit::NodeMemory => "node-memory",
            Limit::SlowBody => "slow-body",
        }
    }

    /// What a refused client is told.
    pub fn explain(self, function: &str) -> String {
        match self {
            Limit::FunctionConcurrency => format!(
                "function `{function}` is running as many requests as its manifest allows (function-concurrency); retry shortly\n"
            ),
            Limit::FunctionShare => format!(
                "function `{function}` is at its share of the node (function-share); retry shortly\n"
            ),
            Limit::ClientRequests => {
                "this client address has too many requests in flight (client-requests); retry when some finish\n".into()
            }
            Limit::ClientConnections => {
                "this client address has too many connections open (client-connections)\n".into()
            }
            Limit::NodeSlots => {
                "the node is at capacity: every instance slot is in use (node-slots); retry shortly\n"
                    .into()
            }
            Limit::NodeMemory => {
                "the node is at capacity: its memory budget is reserved (node-memory); retry shortly\n"
                    .into()
            }
            Limit::SlowBody => {
                "the request body arrived too slowly (slow-body)\n".into()
            }
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What one function holds right now; shared by every load of it, so a
/// reload does not reset its count.
#[derive(Debug, Default)]
pub struct FunctionShare {
    slots: AtomicU32,
    memory: AtomicU64,
    /// Requests running now.
    requests: AtomicU32,
    /// Its manifest's `max-concurrency`; 0 when it names none.
    max_requests: AtomicU32,
}

impl FunctionShare {
    /// Holds the function to `max` requests at once (its manifest's
    /// `max-concurrency`), or to the node's share alone with `None`.
    /// Requests running now are not ended; new ones wait until they fit.
    pub fn set_max_concurrency(&self, max: Option<u32>) {
        self.max_requests.store(max.unwrap_or(0), Ordering::Release);
    }
}

/// What one client address holds right now.
#[derive(Debug, Default, Clone, Copy)]
struct ClientHold {
    requests: u32,
    connections: u32,
}

/// Client counts are spread over this many locks so workers on different
/// cores rarely meet on one.
const CLIENT_SHARDS: usize = 16;

/// The node's admission control (see the module docs).
#[derive(Debug)]
pub struct Admission {
    limits: Limits,
    slots: AtomicU32,
    memory: AtomicU64,
    functions: Mutex<HashMap<Arc<str>, Arc<FunctionShare>>>,
    clients: [Mutex<HashMap<IpAddr, ClientHold>>; CLIENT_SHARDS],
    /// When each limit's refusals were last logged (ms since `started`).
    logged_at: [AtomicU64; Limit::ALL.len()],
    started: std::time::Instant,
}

impl Default for Admission {
    /// Limits too high to refuse anything: for tools and tests that serve
    /// without a node's configuration.
    fn default() -> Self {
        Self::new(Limits {
            slots: u32::MAX,
            memory_budget: u64::MAX,
            function_share_percent: 100,
            client_requests: u32::MAX,
            client_connections: u32::MAX,
        })
    }
}

impl Admission {
    /// Admission under `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            slots: AtomicU32::new(0),
            memory: AtomicU64::new(0),
            functions: Mutex::default(),
            clients: std::array::from_fn(|_| Mutex::default()),
            logged_at: std::array::from_fn(|_| AtomicU64::new(0)),
            started: std::time::Instant::now(),
        }
    }

    /// Whether a refusal by `limit` should be logged now: at most one line
    /// per limit a second, so a flood of refused requests cannot become a
    /// flood of log lines (the counts are in `/metrics`).
    pub fn should_log(&self, limit: Limit) -> bool {
        let now = self.started.elapsed().as_millis() as u64 + 1_000;
        let last = &self.logged_at[limit.index()];
        let previous = last.load(Ordering::Relaxed);
        now.saturating_sub(previous) >= 1_000
            && last
                .compare_exchange(previous, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// The limits it admits under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The share record of `function` (one per name for the node's life).
    pub fn function_share(&self, function: &Arc<str>) -> Arc<FunctionShare> {
        let mut functions = self.functions.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(functions.entry(Arc::clone(function)).or_default())
    }

    fn shard(&self, client: IpAddr) -> &Mutex<HashMap<IpAddr, ClientHold>> {
        use std::hash::{Hash, Hasher};
        // Fixed keys: the same address must always land on one shard.
        let mut hasher = std::hash::DefaultHasher::new();
        client.hash(&mut hasher);
        &self.clients[hasher.finish() as usize % CLIENT_SHARDS]
    }

    /// Changes `client`'s hold with `change`, which may refuse; drops the
    /// entry once the client holds nothing.
    fn with_client<T>(
        &self,
        client: IpAddr,
        change: impl FnOnce(&mut ClientHold) -> Option<T>,
    ) -> Option<T> {
        let mut shard = self.shard(client).lock().unwrap_or_else(|p| p.into_inner());
        let hold = shard.entry(client).or_default();
        let result = change(hold);
        if hold.requests == 0 && hold.connections == 0 {
            shard.remove(&client);
        }
        result
    }

    /// A new connection from `client`, or `None` past its share.
    pub fn connect(self: &Arc<Self>, client: IpAddr) -> Option<Connected> {
        let client = client_key(client);
        let limit = self.limits.client_connections;
        let taken = self.with_client(client, |hold| {
            (hold.connections < limit).then(|| hold.connections += 1)
        });
        taken.map(|()| Connected {
            admission: Arc::clone(self),
            client,
        })
    }

    /// Admits a request of a function with `share`, `weight` slots and
    /// `memory` bytes of linear memory from `client`, or names the limit
    /// that refuses it.
    pub fn admit(
        self: &Arc<Self>,
        share: &Arc<FunctionShare>,
        weight: u32,
        memory: u64,
        client: IpAddr,
    ) -> Result<Admitted, Limit> {
        let client = client_key(client);
        let limit = self.limits.client_requests;
        self.with_client(client, |hold| {
            (hold.requests.saturating_add(weight) <= limit).then(|| hold.requests += weight)
        })
        .ok_or(Limit::ClientRequests)?;
        // From here on the ticket gives back what was taken if a later
        // reservation fails.
        let mut ticket = Admitted {
            admission: Arc::clone(self),
            share: Arc::clone(share),
            client,
            client_slots: weight,
            function_requests: 0,
            function_slots: 0,
            function_memory: 0,
            node_slots: 0,
            node_memory: 0,
        };
        // The function's share first, so a flood at a function that holds
        // its share never touches the node's counters; when the share is
        // the whole node, the refusal is the node's.
        let share_limit =
            |node: Limit, whole: bool| if whole { node } else { Limit::FunctionShare };
        let max_requests = share.max_requests.load(Ordering::Acquire);
        if max_requests > 0 {
            reserve32(&share.requests, 1, max_requests).ok_or(Limit::FunctionConcurrency)?;
            ticket.function_requests = 1;
        }
        let function_slots = self.limits.function_slots();
        reserve32(&share.slots, weight, function_slots)
            .ok_or_else(|| share_limit(Limit::NodeSlots, function_slots >= self.limits.slots))?;
        ticket.function_slots = weight;
        let function_memory = self.limits.function_memory();
        reserve64(&share.memory, memory, function_memory).ok_or_else(|| {
            share_limit(
                Limit::NodeMemory,
                function_memory >= self.limits.memory_budget,
            )
        })?;
        ticket.function_memory = memory;
        reserve32(&self.slots, weight, self.limits.slots).ok_or(Limit::NodeSlots)?;
        ticket.node_slots = weight;
        reserve64(&self.memory, memory, self.limits.memory_budget).ok_or(Limit::NodeMemory)?;
        ticket.node_memory = memory;
        Ok(ticket)
    }

    /// Instance slots and memory reserved right now, node-wide.
    pub fn in_use(&self) -> (u32, u64) {
        (
            self.slots.load(Ordering::Relaxed),
            self.memory.load(Ordering::Relaxed),
        )
    }
}

/// The address a client is counted under: IPv4 (also when mapped into
/// IPv6) as it is, IPv6 by its /64, since one host is routinely given a
/// whole /64 and could otherwise open a fresh address per connection.
pub fn client_key(client: IpAddr) -> IpAddr {
    match client.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(std::net::Ipv6Addr::from(bits))
        }
    }
}

/// Adds `amount` to `counter` unless that would pass `limit`.
fn reserve32(counter: &AtomicU32, amount: u32, limit: u32) -> Option<()> {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
            held.checked_add(amount).filter(|total| *total <= limit)
        })
        .ok()
        .map(|_| ())
}

/// Adds `amount` to `counter` unless that would pass `limit`.
fn reserve64(counter: &AtomicU64, amount: u64, limit: u64) -> Option<()> {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
            held.checked_add(amount).filter(|total| *total <= limit)
        })
        .ok()
        .map(|_| ())
}

/// A request's place in the node: what it reserved, given back on drop
/// (when its instance is gone).
#[derive(Debug)]
pub struct Admitted {
    admission: Arc<Admission>,
    share: Arc<FunctionShare>,
    client: IpAddr,
    client_slots: u32,
    function_requests: u32,
    function_slots: u32,
    function_memory: u64,
    node_slots: u32,
    node_memory: u64,
}

impl Admitted {
    /// The admission this ticket belongs to.
    pub fn admission(&self) -> &Arc<Admission> {
        &self.admission
    }

    /// The client as admission counts it ([`client_key`]: an IPv6 client
    /// by its /64), for log lines about the request.
    pub fn client(&self) -> IpAddr {
        self.client
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.share
            .requests
            .fetch_sub(self.function_requests, Ordering::AcqRel);
        self.share
            .slots
            .fetch_sub(self.function_slots, Ordering::AcqRel);
        self.share
            .memory
            .fetch_sub(self.function_memory, Ordering::AcqRel);
        self.admission
            .slots
            .fetch_sub(self.node_slots, Ordering::AcqRel);
        self.admission
            .memory
            .fetch_sub(self.node_memory, Ordering::AcqRel);
        self.admission.with_client(self.client, |hold| {
            hold.requests = hold.requests.saturating_sub(self.client_slots);
            Some(())
        });
    }
}

/// A client's open connection, given back on drop.
#[derive(Debug)]
pub struct Connected {
    admission: Arc<Admission>,
    client: IpAddr,
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.admission.with_client(self.client, |hold| {
            hold.connections = hold.connections.saturating_sub(1);
            Some(())
        });
    }
}

/// The instance slots a request of a component needing `memories` linear
/// memories and `tables` tables takes: the pool plans two memories and
/// four tables per slot, so a component needing more takes more slots and
/// cannot exhaust the pool faster than its count of requests suggests.
/// `None` (a component whose needs cannot be known up front) takes the most
/// a component may need.
pub fn weight_of(needs: Option<(u32, u32)>) -> u32 {
    let (memories, tables) = needs.unwrap_or((
        crate::engine::runtime::MAX_MEMORIES_PER_COMPONENT,
        crate::engine::runtime::MAX_TABLES_PER_COMPONENT,
    ));
    memories.div_ceil(2).max(tables.div_ceil(4)).max(1)
}

/// Raises this process's open-file limit (soft) to its hard limit, and
/// returns the limit now in force. Every connection holds a descriptor; a
/// node past its limit cannot accept (the accept loop backs off and logs;
/// connections wait in the listen backlog, then are refused by the kernel)
/// while requests already accepted go on.
#[cfg(target_os = "linux")]
pub fn raise_open_file_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for the call to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit that only raises the soft
        // limit up to the hard one, which an unprivileged process may do.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        limit = raised;
    }
    Ok(limit.rlim_cur)
}

/// Elsewhere the limit is left as it is (and not known).
#[cfg(not(target_os = "linux"))]
pub fn raise_open_file_limit() -> std::io::Result<u64> {
    Err(std::io::Error::other("not supported on this system"))
}

/// A byte size such as `512MiB`, `8GiB` or `1073741824`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size (write e.g. 512MiB or 8GiB)"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "k" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "TiB" | "T" => 1 << 40,
        other => {
            return Err(format!(
                "unknown size unit `{other}` (use B, KiB, MiB, GiB or TiB)"
            ));
        }
    };
    number
        .checked_mul(scale)
        .filter(|bytes| *bytes > 0)
        .ok_or_else(|| format!("`{text}` is not a usable size"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            slots: 10,
            memory_budget: 1000,
            function_share_percent: 50,
            client_requests: 4,
            client_connections: 2,
        }
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn a_function_never_holds_more_than_its_share_and_gives_it_back() {
        let admission = Arc::new(Admission::new(Limits {
            client_requests: 100,
            ..limits()
        }));
        let f = admission.function_share(&"f".into());
        let g = admission.function_share(&"g".into());
        let held: Vec<_> = (0..5)
            .map(|_| admission.admit(&f, 1, 10, A).unwrap())
            .collect();
        assert_eq!(
            admission.admit(&f, 1, 10, A).unwrap_err(),
            Limit::FunctionShare
        );
        // Another function still gets in.
        let other = admission.admit(&g, 1, 10, B).unwrap();
        drop(held);
        drop(other);
        assert_eq!(admission.in_use(), (0, 0));
        // Memory counts too: 600 of a 1000 budget is past a 50 % share.
        assert_eq!(
            admission.admit(&f, 1, 600, A).unwrap_err(),
            Limit::FunctionShare
        );
        assert_eq!(admission.in_use(), (0, 0));
    }

    #[test]
    fn a_function_runs_no_more_requests_than_its_manifest_allows() {
        let admission = Arc::new(Admission::new(limits()));
        let f = admission.function_share(&"f".into());
        f.set_max_concurrency(Some(2));
        let first = admission.admit(&f, 1, 1, A).unwrap();
        let _second = admission.admit(&f, 1, 1, B).unwrap();
        assert_eq!(
            admission.admit(&f, 1, 1, B).unwrap_err(),
            Limit::FunctionConcurrency
        );
        drop(first);
        let third = admission.admit(&f, 1, 1, B).unwrap();
        // Without a limit of its own, the node's share is what holds it.
        f.set_max_concurrency(None);
        let more: Vec<_> = (0..3)
            .map(|_| admission.admit(&f, 1, 1, A).unwrap())
            .collect();
        drop((third, more));
        assert_eq!(
            f.requests.load(Ordering::Relaxed),
            1,
            "only _second still runs"
        );
    }

    #[test]
    fn a_client_never_holds_more_than_its_share_of_requests_or_connections() {
        let admission = Arc::new(Admission::new(limits()));
        let f = admission.function_share(&"f".into());
        let g = admission.function_share(&"g".into());
        let mut held = Vec::new();
        for i in 0..4 {
            let share = if i % 2 == 0 { &f } else { &g };
            held.push(admission.admit(share, 1, 1, A).unwrap());
        }
        assert_eq!(
            admission.admit(&g, 1, 1, A).unwrap_err(),
            Limit::ClientRequests
        );
        let b = admission.admit(&g, 1, 1, B).unwrap();
        let c1 = admission.connect(A).unwrap();
        let c2 = admission.connect(A).unwrap();
        assert!(admission.connect(A).is_none());
        assert!(admission.connect(B).is_some());
        drop((c1, c2, held, b));
        assert!(admission.connect(A).is_some());
        assert_eq!(admission.in_use(), (0, 0));
        for shard in &admission.clients {
            assert!(shard.lock().unwrap().is_empty(), "a client's entry stayed");
        }
    }

    #[test]
    fn the_node_refuses_past_its_slots_or_memory_and_rolls_back() {
        let admission = Arc::new(Admission::new(Limits {
            function_share_percent: 100,
            client_requests: 100,
            ..limits()
        }));
        let f = admission.function_share(&"f".into());
        let g = admission.function_share(&"g".into());
        let heavy = admission.admit(&f, 8, 100, A).unwrap();
        assert_eq!(
            admission.admit(&g, 3, 100, A).unwrap_err(),
            Limit::NodeSlots
        );
        let big = admission.admit(&g, 1, 850, A).unwrap();
        assert_eq!(
            admission.admit(&g, 1, 100, A).unwrap_err(),
            Limit::NodeMemory
        );
        // What the refused requests reserved on the way was given back.
        assert_eq!(admission.admit(&g, 1, 0, A).map(drop), Ok(()));
        assert_eq!(admission.in_use(), (9, 950));
        drop((heavy, big));
        assert_eq!(admission.in_use(), (0, 0));
        assert_eq!(weight_of(Some((1, 1))), 1);
        assert_eq!(weight_of(Some((5, 2))), 3);
        assert_eq!(weight_of(Some((2, 13))), 4);
    }

    #[test]
    fn a_client_is_counted_by_its_slots_and_ipv6_by_its_64() {
        let admission = Arc::new(Admission::new(Limits {
            function_share_percent: 100,
            ..limits()
        }));
        let f = admission.function_share(&"f".into());
        // Two requests of weight 2 fill a client's 4 slots.
        let held: Vec<_> = (0..2)
            .map(|_| admission.admit(&f, 2, 1, A).unwrap())
            .collect();
        assert_eq!(
            admission.admit(&f, 1, 1, A).unwrap_err(),
            Limit::ClientRequests
        );
        drop(held);
        let one: IpAddr = "2001:db8::1".parse().unwrap();
        let other: IpAddr = "2001:db8::ffff:2".parse().unwrap();
        let _c1 = admission.connect(one).unwrap();
        let _c2 = admission.connect(other).unwrap();
        assert!(admission.connect("2001:db8::3".parse().unwrap()).is_none());
        assert!(
            admission
                .connect("2001:db8:0:1::1".parse().unwrap())
                .is_some()
        );
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(client_key(mapped), A);
    }

    #[test]
    fn sizes_parse_with_binary_units_and_bad_ones_are_named() {
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("8GiB"), Ok(8 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(
            parse_size("8GB")
                .unwrap_err()
                .contains("unknown size unit `GB`")
        );
        assert!(parse_size("lots").is_err());
        assert!(parse_size("0").is_err());
    }
}
