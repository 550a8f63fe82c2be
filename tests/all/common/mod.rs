//! The integration tests' harness: a real node ([`node`]) and requests held open on it ([`held`]), real
//! NATS servers for fleets ([`nats`]), a fake upstream
//! that records what functions send ([`upstream`]), cross-checks with
//! Python's peer libraries ([`python`]), secrets with the encodings a
//! leak would take ([`encodings`]), JavaScript functions built with npm
//! ([`js`]), and a guest's memory read at a trap ([`guest_memory`]).

#![allow(
    dead_code,
    unused_imports,
    reason = "not every helper is used by every test area, nor by the benches that borrow the harness"
)]

mod encodings;
mod guest_memory;
mod held;
mod js;
mod nats;
mod node;
mod proxy;
mod python;
mod upstream;

pub use encodings::*;
pub use guest_memory::*;
pub use held::*;
pub use js::*;
pub use keyhole_test_artifacts as artifacts;
pub use nats::*;
pub use node::*;
pub use proxy::*;
pub use python::*;
pub use upstream::*;
