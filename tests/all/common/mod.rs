//! The integration tests' harness: a real node ([`node`]) and requests held open on it ([`held`]), real
//! NATS servers for fleets ([`nats`]), a fake upstream
//! that records what functions send ([`upstream`]), cross-checks with
//! Python's peer libraries ([`python`]), and secrets with the encodings a
//! leak would take ([`encodings`]).

#![allow(
    dead_code,
    unused_imports,
    reason = "not every helper is used by every test area, nor by the benches that borrow the harness"
)]

mod encodings;
mod held;
mod nats;
mod node;
mod proxy;
mod python;
mod upstream;

pub use encodings::*;
pub use held::*;
pub use keyhole_test_artifacts as artifacts;
pub use nats::*;
pub use node::*;
pub use proxy::*;
pub use python::*;
pub use upstream::*;
