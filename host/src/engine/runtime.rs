//! The wasmtime engine, the linker, and the state each request's store holds.
//!
//! A function instance sees WASI p2 (which Rust-std guests import), the
//! `wasi:http` proxy interfaces, `keyhole:secrets`, and what components
//! written for other runtimes import (`wasmcloud:secrets` over the same
//! grants, `wasi:config/store` with its manifest's settings) — and nothing
//! ambient: no host environment, arguments, directories or sockets.

use crate::engine::module_cache::ModuleCache;
use crate::node::observe::FunctionMetrics;
use crate::redact::guest_log::{GuestOutput, Stream};
use crate::secrets::{self, FunctionSecrets, SecretsCtx, SecretsHost, SecretsView};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, StoreLimits,
    StoreLimitsBuilder,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// How often the engine's epoch advances; the granularity of timeouts.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
/// The most instances alive at once across the node (pooling allocator
/// slots) unless the operator says otherwise (`keyhole serve --max-instances`).
pub const DEFAULT_MAX_INSTANCES: u32 = 1000;
/// Instance slots of a runtime that only compiles and links components (the
/// CLI's deploy checks, an admin API served without a node): it never runs
/// more than one instance at once, and every slot reserves gigabytes of
/// address space, which a process under an address-space limit
/// (`ulimit -v`) may not have for [`DEFAULT_MAX_INSTANCES`] of them.
pub const COMPILE_ONLY_INSTANCES: u32 = 1;
/// The most `--max-instances` may ask for: every slot reserves address space
/// for its memories up front, and more than this would not fit in the 128 TiB
/// a 64-bit process can address.
pub const MAX_INSTANCES_LIMIT: u32 = 10_000;
/// The largest linear memory any function may have; manifests ask for less.
pub const MAX_MEMORY_BYTES: usize = crate::deploy::manifest::MAX_MEMORY_MIB as usize * 1024 * 1024;
/// Wasm stack limit per instance.
pub const MAX_WASM_STACK: usize = 512 * 1024;
/// Table elements per table.
pub const MAX_TABLE_ELEMENTS: usize = 20_000;
/// Core and component instances one request's store may create.
pub const MAX_INSTANCES_PER_REQUEST: usize = 64;
/// Tables one request's store may create.
pub const MAX_TABLES_PER_REQUEST: usize = 64;
/// Linear memories one request's store may create.
pub const MAX_MEMORIES_PER_REQUEST: usize = 8;
/// Host resources (secret handles, WASI streams, HTTP fields, …) one
/// request may hold at once; creating more traps the instance.
pub const MAX_RESOURCES_PER_REQUEST: usize = 10_000;
/// Component-model handles live at once in one request's store.
pub const MAX_COMPONENT_HANDLES: usize = 10_000;
/// The most bytes a guest may pass to the host in one call (a message to
/// sign, a body chunk); a larger input traps the instance before any host
/// code sees it.
pub const MAX_HOSTCALL_INPUT_BYTES: usize = 16 << 20;

/// Linear memories one component may define (the pool's per-component cap).
pub const MAX_MEMORIES_PER_COMPONENT: u32 = 4;
/// Tables one component may define (the pool's per-component cap).
pub const MAX_TABLES_PER_COMPONENT: u32 = 16;
/// Core module instances one component may make (the pool's
/// per-component cap).
pub const MAX_CORE_INSTANCES_PER_COMPONENT: u32 = 32;

/// Builds the engine every function runs on: a pooling allocator with room
/// for `max_instances` function instances alive at once, epoch-based
/// interruption, async host calls.
///
/// Memories and tables are reserved up front per pool slot, so the pool
/// plans two memories and four tables per instance and admission weighs a
/// component needing more ([`crate::node::admission::weight_of`]). Core
/// instances are only counted, so their total is set to what
/// `max_instances` of the largest component may make: a component made of
/// many core instances can never run the pool out before its slots do.
pub fn engine(max_instances: u32) -> wasmtime::Result<Engine> {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(max_instances)
        .total_core_instances(max_instances.saturating_mul(MAX_CORE_INSTANCES_PER_COMPONENT))
        .total_memories(max_instances * 2)
        .total_tables(max_instances * 4)
        .total_stacks(max_instances)
        .max_memory_size(MAX_MEMORY_BYTES)
        .table_elements(MAX_TABLE_ELEMENTS)
        .max_core_instances_per_component(MAX_CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(MAX_MEMORIES_PER_COMPONENT)
        .max_tables_per_component(MAX_TABLES_PER_COMPONENT)
        .linear_memory_keep_resident(1 << 20)
        .table_keep_resident(1 << 14)
        .pagemap_scan(wasmtime::Enabled::Auto);
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .max_wasm_stack(MAX_WASM_STACK)
        .concurrency_support(false)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
}

/// Starts the thread that advances `engine`'s epoch every [`EPOCH_TICK`],
/// which is what lets a request's deadline interrupt a guest in a loop.
pub fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("keyhole-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning the epoch thread");
}

/// The linker with everything a function may import.
pub fn linker(engine: &Engine) -> wasmtime::Result<Linker<RequestState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    crate::engine::fields_budget::add_to_linker(&mut linker)?;
    secrets::add_to_linker(&mut linker)?;
    crate::config::add_to_linker(&mut linker)?;
    Ok(linker)
}

/// The data of one request's store: WASI, HTTP, secrets, and limits.
pub struct RequestState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    secrets: SecretsCtx,
    /// The function's `[config]`, for `wasi:config/store`.
    config: Arc<crate::config::FunctionConfig>,
    /// Host memory its header fields hold ([`crate::engine::fields_budget`]).
    pub(crate) field_bytes: crate::engine::fields_budget::FieldBytes,
    /// Memory and instance limits the store enforces.
    pub limits: StoreLimits,
}

impl RequestState {
    /// State for request `request` of `function`, limited to `memory_bytes`.
    pub fn new(
        function: Arc<str>,
        request: u64,
        secrets: Arc<FunctionSecrets>,
        config: Arc<crate::config::FunctionConfig>,
        memory_bytes: usize,
        metrics: Arc<FunctionMetrics>,
    ) -> Self {
        let output =
            |stream| GuestOutput::new(stream, Arc::clone(&function), request, Arc::clone(&secrets));
        Self {
            // Nothing from the host: no env, no args, no preopens, no sockets,
            // no stdin; stdout and stderr go to the node's log, redacted.
            wasi: WasiCtx::builder()
                .stdout(output(Stream::Stdout))
                .stderr(output(Stream::Stderr))
                .build(),
            http: WasiHttpCtx::new(),
            table: resource_table(),
            secrets: SecretsCtx::new(function, request, secrets, metrics),
            config,
            field_bytes: Default::default(),
            limits: StoreLimitsBuilder::new()
                .memory_size(memory_bytes)
                .instances(MAX_INSTANCES_PER_REQUEST)
                .tables(MAX_TABLES_PER_REQUEST)
                .memories(MAX_MEMORIES_PER_REQUEST)
                .table_elements(MAX_TABLE_ELEMENTS)
                .build(),
        }
    }
}

impl RequestState {
    /// Records how many Keyhole nodes the request passed through, so its
    /// outgoing requests carry one more.
    pub fn set_hops(&mut self, hops: u8) {
        self.secrets.injector_mut().set_hops(hops);
    }
}

/// A request's resource table, capped at [`MAX_RESOURCES_PER_REQUEST`].
fn resource_table() -> ResourceTable {
    let mut table = ResourceTable::new();
    table.set_max_capacity(MAX_RESOURCES_PER_REQUEST);
    table
}

impl crate::config::ConfigHost for RequestState {
    fn config(&mut self) -> crate::config::ConfigView<'_> {
        crate::config::ConfigView {
            config: &self.config,
        }
    }
}

impl WasiView for RequestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for RequestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: self.secrets.injector_mut(),
        }
    }
}

impl RequestState {
    /// What this request should wait for before it runs on, if its audit
    /// records have outrun the trail's writer (see
    /// [`SecretsCtx::audit_backpressure`]).
    pub fn audit_backpressure(
        &mut self,
    ) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> {
        self.secrets.audit_backpressure()
    }
}

impl SecretsHost for RequestState {
    fn secrets(&mut self) -> SecretsView<'_> {
        SecretsView {
            ctx: &mut self.secrets,
        }
    }
}

/// Why a component cannot run as a Keyhole function.
#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    /// Not WebAssembly at all.
    #[error("not a WebAssembly file (no `\\0asm` header)")]
    NotWasm,
    /// A core module rather than a component.
    #[error("a core WebAssembly module, not a component: build it for the wasm32-wasip2 target")]
    CoreModule,
    /// Wasmtime could not compile it.
    #[error("does not compile: {0}")]
    Compile(String),
    /// It imports something the node does not provide, or does not export
    /// `wasi:http/incoming-handler`.
    #[error(
        "does not fit what a node runs (the keyhole:secrets/node world: export wasi:http/incoming-handler, import nothing else): {0}"
    )]
    World(String),
}

/// A function component compiled and linked, ready to instantiate cheaply
/// once per request.
pub type FunctionPre = crate::engine::bindings::NodePre<RequestState>;

/// The folder in a data directory where compiled components are cached.
pub const COMPILED_CACHE_DIR: &str = "compiled";

/// The engine and linker every function shares, and where compiled
/// components are kept between runs.
pub struct Runtime {
    engine: Engine,
    linker: Linker<RequestState>,
    cache: Option<ModuleCache>,
}

impl Runtime {
    /// A runtime with the node's engine configuration and imports, which
    /// compiles every component it is given.
    pub fn new() -> wasmtime::Result<Self> {
        Self::with_max_instances(DEFAULT_MAX_INSTANCES)
    }

    /// The same with room for `max_instances` (at most
    /// [`MAX_INSTANCES_LIMIT`]) instances alive at once instead of
    /// [`DEFAULT_MAX_INSTANCES`]; past that, requests get 503.
    pub fn with_max_instances(max_instances: u32) -> wasmtime::Result<Self> {
        if !(1..=MAX_INSTANCES_LIMIT).contains(&max_instances) {
            return Err(wasmtime::format_err!(
                "room for {max_instances} instances asked for: it must be 1 to {MAX_INSTANCES_LIMIT}"
            ));
        }
        let engine = engine(max_instances).map_err(|e| {
            let (instances, remedy) = match max_instances {
                1 => (
                    "1 instance".to_owned(),
                    "raise the process's address-space limit (`ulimit -v`)",
                ),
                n => (
                    format!("{n} instances"),
                    "ask for fewer (`keyhole serve --max-instances`) or raise the process's address-space limit (`ulimit -v`)",
                ),
            };
            e.context(format!(
                "cannot reserve address space for {instances} alive at once \
                 (each reserves room for its largest memories and their guard pages); {remedy}"
            ))
        })?;
        let linker = linker(&engine)?;
        Ok(Self {
            engine,
            linker,
            cache: None,
        })
    }

    /// A runtime that only compiles and checks components, with room for
    /// [`COMPILE_ONLY_INSTANCES`]: what the CLI and an admin API without a
    /// node need, in little address space.
    pub fn compile_only() -> wasmtime::Result<Self> {
        Self::with_max_instances(COMPILE_ONLY_INSTANCES)
    }

    /// A runtime for the node or CLI working on `store`, with room for
    /// `max_instances` instances alive at once: it keeps compiled
    /// components in `cache_dir` (the data directory's
    /// [`COMPILED_CACHE_DIR`]), authenticated under a key derived from that
    /// store's own secret and its master key.
    pub fn for_store(
        store: &dyn crate::store::KeyCustody,
        cache_dir: std::path::PathBuf,
        max_instances: u32,
    ) -> wasmtime::Result<Self> {
        let runtime = Self::with_max_instances(max_instances)?;
        Ok(match store.module_cache_key() {
            Ok(key) => {
                let cache = ModuleCache::new(cache_dir, key, &runtime.engine);
                runtime.with_cache(cache)
            }
            Err(e) => {
                tracing::warn!("compiling every component at start: no cache key ({e})");
                runtime
            }
        })
    }

    /// This runtime, saving what it compiles to `cache` and loading from it
    /// in [`Runtime::prepare_cached`]. The cache must be made for
    /// [`Runtime::engine`].
    pub fn with_cache(mut self, cache: ModuleCache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The shared engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The compiled-module cache, when there is one.
    pub fn cache(&self) -> Option<&ModuleCache> {
        self.cache.as_ref()
    }

    /// Compiles `bytes` and checks that the component imports only what the
    /// node provides and exports `wasi:http/incoming-handler`. Saves
    /// nothing: see [`Runtime::remember`].
    pub fn prepare(&self, bytes: &[u8]) -> Result<FunctionPre, ComponentError> {
        if !bytes.starts_with(b"\0asm") {
            return Err(ComponentError::NotWasm);
        }
        if !wasmparser::Parser::is_component(bytes) {
            return Err(ComponentError::CoreModule);
        }
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| ComponentError::Compile(format!("{e:#}")))?;
        self.link(&component)
    }

    /// Saves `compiled`, the compilation of the component whose SHA-256 (as
    /// the store records it) is `sha256`, to the cache (if there is one) for
    /// later loads. Only for components that passed the deploy gate. A
    /// failure is logged: it costs time, not correctness.
    pub fn remember(&self, sha256: &str, compiled: &FunctionPre) {
        if let Some(cache) = &self.cache
            && let Err(e) = cache.store(sha256, compiled.instance_pre().component())
        {
            tracing::warn!("{e}");
        }
    }

    /// Drops what [`Runtime::remember`] saved for `sha256`: for a component
    /// whose deployment was refused after all.
    pub fn forget(&self, sha256: &str) {
        if let Some(cache) = &self.cache {
            cache.remove(sha256);
        }
    }

    /// The component whose SHA-256 is `sha256` from the cache, linked, or
    /// `None` when it is not cached (or its entry is unusable): then compile
    /// it with [`Runtime::prepare`].
    pub fn prepare_cached(&self, sha256: &str) -> Option<FunctionPre> {
        let component = self.cache.as_ref()?.load(&self.engine, sha256)?;
        match self.link(&component) {
            Ok(pre) => Some(pre),
            Err(e) => {
                tracing::warn!("a cached component no longer links (compiling instead): {e}");
                None
            }
        }
    }

    fn link(&self, component: &Component) -> Result<FunctionPre, ComponentError> {
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(|e| ComponentError::World(format!("{e:#}")))?;
        FunctionPre::new(pre).map_err(|e| ComponentError::World(format!("{e:#}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_for_instances_must_be_within_range() {
        for refused in [0, MAX_INSTANCES_LIMIT + 1] {
            let error = Runtime::with_max_instances(refused)
                .err()
                .unwrap_or_else(|| panic!("{refused} instances accepted"));
            assert!(
                error.to_string().contains(&format!("{refused} instances")),
                "{error}"
            );
        }
        assert!(Runtime::with_max_instances(1).is_ok());
    }

    #[test]
    fn components_of_many_core_instances_fill_every_slot_of_the_pool() {
        let slots = 3;
        let engine = engine(slots).unwrap();
        let wat = format!(
            "(component (core module $m) {})",
            "(core instance (instantiate $m))".repeat(MAX_CORE_INSTANCES_PER_COMPONENT as usize)
        );
        let component = Component::new(&engine, wat::parse_str(&wat).unwrap()).unwrap();
        let linker = wasmtime::component::Linker::<()>::new(&engine);
        let mut alive = Vec::new();
        for slot in 0..slots {
            let mut store = wasmtime::Store::new(&engine, ());
            let instance = linker
                .instantiate(&mut store, &component)
                .unwrap_or_else(|e| panic!("slot {slot} of {slots}: {e:#}"));
            alive.push((store, instance));
        }
    }
}
