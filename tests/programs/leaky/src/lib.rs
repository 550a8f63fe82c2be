//! `leaky`: a function written the way Keyhole exists to prevent, with
//! credentials of every kind the deploy gate knows compiled into its data.
//! The tests check that `keyhole deploy` refuses it and names each finding.
//!
//! Each credential is split with `concat!` so this source file does not
//! itself look like a leak to scanners; the compiled binary holds them whole.
//! All of them are fake.

use std::hint::black_box;
use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

/// The value the tests store as secret `leaky-stored`, and its encodings.
const STORED: &[&str] = &[
    concat!("leaky-stored-", "value-7f3a9c51"),
    concat!("6c65616b792d73746f7265642d", "76616c75652d3766336139633531"),
    concat!("6C65616B792D73746F7265642D", "76616C75652D3766336139633531"),
    concat!("bGVha3ktc3RvcmVk", "LXZhbHVlLTdmM2E5YzUx"),
];

/// One credential per rule, in the rule list's order.
const CREDENTIALS: &[&str] = &[
    concat!("AKIA", "Z7QR4TXW2ND5KP3L"),
    concat!("ghp_", "Xk29fLq8Zm3Wv7Rt1Yb5Nc0Hd4Pj6Gs2Ae9U"),
    concat!(
        "github_pat_",
        "11ABCDE2F0a1B2c3D4e5F6_g7H8i9J0k1L2m3N4o5P6q7R8s9T0u1V2w3X4y5Z6a7B8c9D0e1F2g3H4i5J6k7"
    ),
    concat!("gho_", "Pq7Lm2Xz9Wv4Rt8Yb1Nc6Hd3Kj5Gs0Ae2U8"),
    concat!("ghs_", "Tz4Lm9Xq2Wv7Rb8Yc1Nd6He3Kj5Gs0Af2U1"),
    concat!("ghr_", "Mv3Lq8Xz1Wp4Rt7Yb2Nc5Hd6Kj9Gs0Ae4U3"),
    concat!("glpat-", "q8Zf_N2vLp0X-wYt7RbK"),
    concat!("glptt-", "3f9a1c2b7e8d4f6a0b5c9e1d2f3a4b5c6d7e8f90"),
    concat!("GR1348941", "zX8q_L2mN9-pR4tV7yB1"),
    concat!("sk_live_", "51Hq8ZfN2vLp0XwYt7RbKc4Md"),
    concat!("xoxb-", "2837465019-8374650192837-Qz8LmXv2Np4Rt"),
    concat!(
        "xoxp-",
        "2837465019-2837465019-2837465019-a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4"
    ),
    concat!("xapp-1-", "A0Z9Y8X7W6V-2837465019283-a9f8e7d6c5b4a3f2e1"),
    concat!(
        "https://hooks.slack.com/services/",
        "T0A1B2C3D/B9Z8Y7X6W/Qm3Lx8Zp2Wv7Rt1Yb5Nc0Hd4"
    ),
    concat!(
        "-----BEGIN EC PRIVATE ",
        "KEY-----\nMHcCAQEEIBq8Zf2vLp0XwYt7RbKc4MdN3sQ9uW1eR5tY7iO0pA2gBoAoGCCqGSM49\n",
        "AwEHoUQDQgAE3Zf2vLp0XwYt7RbKc4MdN3sQ9uW1eR5tY7iO0pA2gBoAoGCCqGSM49\n-----END EC PRIVATE KEY-----"
    ),
    concat!(
        "eyJhbGciOiJIUzI1NiJ9.",
        "eyJzdWIiOiJsZWFreSIsImlhdCI6MTcwMDAwMDAwMH0.",
        "q8ZfN2vLp0XwYt7RbKc4MdN3sQ9uW1eR5tY7iO0pA2g"
    ),
    concat!("db_password=", "\"Vq8Zf2NvLp0XwYt7Rb\""),
];

struct Leaky;

impl wasip2::exports::http::incoming_handler::Guest for Leaky {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        // Touch every constant, so the optimiser keeps them all.
        let total: usize = STORED
            .iter()
            .chain(CREDENTIALS)
            .map(|s| black_box(*s).len())
            .sum();
        let response = OutgoingResponse::new(Fields::new());
        let body = response.body().expect("a new response has a body");
        ResponseOutparam::set(out, Ok(response));
        let stream = body.write().expect("a new body has a stream");
        let _ = stream.blocking_write_and_flush(format!("{total}\n").as_bytes());
        drop(stream);
        let _ = OutgoingBody::finish(body, None);
    }
}

wasip2::http::proxy::export!(Leaky);
