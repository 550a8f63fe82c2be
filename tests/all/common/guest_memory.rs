//! A guest's linear memory as it is at a trap, for guests that cannot read
//! their own (a JavaScript engine inside a component hides its memory from
//! the script it runs).
//!
//! The request runs on the node's own linker and `keyhole:secrets` host,
//! with the node's per-request state, on an engine that only differs from
//! the node's by keeping a core dump of every trap (wasmtime's `coredump`
//! feature, enabled for the tests alone). The guest arranges to trap right
//! after what it wants inspected; the dump holds every memory of the
//! instance as it was then.

use keyhole_host::config::FunctionConfig;
use keyhole_host::crypto::material::SecretMaterial;
use keyhole_host::crypto::secret_value::SecretValue;
use keyhole_host::engine::runtime::{FunctionPre, RequestState, linker};
use keyhole_host::node::observe::Observer;
use keyhole_host::operations::OperationSet;
use keyhole_host::outbound::egress::EgressList;
use keyhole_host::secrets::{BoundSecret, FunctionSecrets};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use wasmtime::component::Component;
use wasmtime::{Config, Engine, Store, WasmCoreDump};
use wasmtime_wasi_http::WasiHttpView as _;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

/// One binding of the function: its name, the operations granted (as
/// `keyhole grant --allow` spells them) and the secret's value.
pub struct Binding<'a> {
    pub name: &'a str,
    pub allow: &'a str,
    pub value: &'a [u8],
}

/// Serves `GET path_and_query` with a fresh instance of `component`, bound
/// as `bindings` say, and returns every linear memory of the instance at
/// the trap the guest must end in. Panics if it does not trap.
pub fn memories_at_trap(
    component: &Path,
    bindings: &[Binding<'_>],
    path_and_query: &str,
) -> Vec<Vec<u8>> {
    let mut config = Config::new();
    config.coredump_on_trap(true);
    let engine = Engine::new(&config).unwrap();
    let compiled = Component::from_file(&engine, component).unwrap();
    let pre =
        FunctionPre::new(linker(&engine).unwrap().instantiate_pre(&compiled).unwrap()).unwrap();

    let function: Arc<str> = "memory-probe".into();
    let secrets = bindings
        .iter()
        .map(|b| {
            let bound = BoundSecret {
                secret: format!("secret-{}", b.name).into(),
                allowed: OperationSet::parse_list(b.allow).unwrap(),
                egress: Arc::new(EgressList::parse_list("").unwrap()),
                current: Some(Arc::new(SecretMaterial::new(
                    1,
                    SecretValue::new(b.value.to_vec()),
                ))),
                grace: Arc::from(Vec::new()),
                usage: Arc::default(),
                in_force: Default::default(),
            };
            (b.name.to_owned(), bound)
        })
        .collect::<HashMap<_, _>>();
    let metrics = Arc::new(Observer::default()).function_metrics(&function);
    let state = RequestState::new(
        Arc::clone(&function),
        1,
        Arc::new(FunctionSecrets::new(secrets)),
        Arc::new(FunctionConfig::default()),
        256 << 20,
        metrics,
    );
    let mut store = Store::new(&engine, state);
    store.limiter(|state| &mut state.limits);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let error = runtime.block_on(async {
        let request = hyper::Request::get(format!("http://localhost{path_and_query}"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let (sender, _receiver) = tokio::sync::oneshot::channel();
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)
            .unwrap();
        let out = store
            .data_mut()
            .http()
            .new_response_outparam(sender)
            .unwrap();
        let instance = pre.instantiate_async(&mut store).await.unwrap();
        instance
            .wasi_http_incoming_handler()
            .call_handle(&mut store, req, out)
            .await
            .expect_err("the guest was to trap after its operation")
    });
    let dump = error
        .downcast_ref::<WasmCoreDump>()
        .unwrap_or_else(|| panic!("a trap without a core dump: {error:?}"));
    dump.memories()
        .iter()
        .map(|memory| memory.data(&store).to_vec())
        .collect()
}
