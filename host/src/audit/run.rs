//! The compact body of a row of function records: what the node's writer
//! stores for each run of records about one function and secret.
//!
//! A run's records share their function and secret, mostly repeat one or
//! two combinations of binding, version, operation and outcome, and follow
//! one another closely in time and request id. The body says each shared
//! part once, in a table of `shapes`, and each record as three numbers:
//!
//! ```json
//! {"run":"function","function":"webhook-verify","secret":"gh-webhook",
//!  "shapes":[["GITHUB_WEBHOOK",1,"get","allowed",null,null],
//!            ["GITHUB_WEBHOOK",1,"verify-hmac-sha256","allowed",null,null]],
//!  "records":[[1796178435698,4401,0],[0,0,1],[1,1,0],[0,0,1]]}
//! ```
//!
//! A shape is `[binding, version, operation, outcome, destination,
//! reason]`. A record is `[time, request, shape]`: its time and request id
//! as differences from the record before it in the row (the first
//! record's from zero, so it carries its own values, with wrapping
//! arithmetic, so any value round-trips) and the index of its shape.
//! Records stay in the order they were made, so one request's operations
//! read back in order. This is a fifteenth or less of the bytes of the
//! one-object-per-record form, and bytes are most of what the writer's CPU
//! and the trail's disk go on. Rows written before this form existed (a
//! single record, or an array of them) still read and verify: see
//! [`super::chain`].

use super::{Event, FunctionEvent, Millis, OpOutcome, Timed};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

/// What records of one run may differ in besides time and request, as
/// stored: binding, version, operation, outcome, destination, reason.
type ShapeRef<'a> = (
    &'a str,
    Option<u32>,
    &'a str,
    OpOutcome,
    Option<&'a str>,
    Option<&'a str>,
);

/// A shape as read back.
type Shape = (
    Arc<str>,
    Option<u32>,
    String,
    OpOutcome,
    Option<String>,
    Option<String>,
);

/// Past this many shapes in a row, they are looked up by hash rather than
/// compared one by one (a guest guessing binding names makes one per
/// guess).
const SHAPES_SCANNED: usize = 8;

/// Encodes `records` as one compact run body, if they form a run: all
/// function records about the same function and secret, at least one.
pub fn encode(records: &[&Timed]) -> Option<String> {
    let first = function_event(records.first()?)?;
    let mut shapes: Vec<ShapeRef<'_>> = Vec::new();
    let mut index: HashMap<ShapeRef<'_>, usize> = HashMap::new();
    let mut coded = Vec::with_capacity(records.len());
    let (mut at_ms, mut request) = (0i64, 0u64);
    let mut last_shape = 0;
    for timed in records {
        let event = function_event(timed)?;
        if event.function != first.function
            || event.secret != first.secret
            || event.digest != first.digest
        {
            return None;
        }
        let shape = shape_of(event);
        let found = if shapes.get(last_shape) == Some(&shape) {
            Some(last_shape)
        } else if shapes.len() <= SHAPES_SCANNED {
            shapes.iter().position(|known| *known == shape)
        } else {
            if index.is_empty() {
                index.extend(shapes.iter().enumerate().map(|(i, s)| (*s, i)));
            }
            index.get(&shape).copied()
        };
        last_shape = found.unwrap_or_else(|| {
            shapes.push(shape);
            if !index.is_empty() {
                index.insert(shape, shapes.len() - 1);
            }
            shapes.len() - 1
        });
        coded.push((
            timed.at_ms.wrapping_sub(at_ms),
            event.request.wrapping_sub(request) as i64,
            last_shape,
        ));
        at_ms = timed.at_ms;
        request = event.request;
    }
    serde_json::to_string(&RunRef {
        run: RunKind::Function,
        function: &first.function,
        secret: first.secret.as_deref(),
        digest: first.digest.as_deref(),
        shapes,
        records: coded,
    })
    .ok()
}

/// The records a compact run body holds, in order, or `None` when `body`
/// is not one (or is damaged).
pub fn decode(body: &str) -> Option<Vec<(Millis, Event)>> {
    let run: Run = serde_json::from_str(body).ok()?;
    if run.records.is_empty() {
        return None;
    }
    let function: Arc<str> = run.function.into();
    let secret: Option<Arc<str>> = run.secret.map(Into::into);
    let digest: Option<Arc<str>> = run.digest.map(Into::into);
    let (mut at_ms, mut request) = (0i64, 0u64);
    run.records
        .iter()
        .map(|&(at_ms_delta, request_delta, shape)| {
            let (binding, version, operation, outcome, destination, reason) =
                run.shapes.get(shape)?;
            at_ms = at_ms.wrapping_add(at_ms_delta);
            request = request.wrapping_add(request_delta as u64);
            let event = FunctionEvent {
                function: Arc::clone(&function),
                request,
                binding: Arc::clone(binding),
                secret: secret.clone(),
                version: *version,
                operation: operation.clone().into(),
                outcome: *outcome,
                destination: destination.clone(),
                reason: reason.clone(),
                digest: digest.clone(),
            };
            Some((at_ms, Event::Function(event)))
        })
        .collect()
}

fn function_event(timed: &Timed) -> Option<&FunctionEvent> {
    match &timed.event {
        Event::Function(event) => Some(event),
        _ => None,
    }
}

fn shape_of(event: &FunctionEvent) -> ShapeRef<'_> {
    (
        &event.binding,
        event.version,
        &event.operation,
        event.outcome,
        event.destination.as_deref(),
        event.reason.as_deref(),
    )
}

/// What a run holds: function records are the only kind written as runs.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum RunKind {
    Function,
}

/// The run being written, borrowing from its records.
#[derive(Serialize)]
struct RunRef<'a> {
    run: RunKind,
    function: &'a str,
    secret: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<&'a str>,
    shapes: Vec<ShapeRef<'a>>,
    records: Vec<(i64, i64, usize)>,
}

/// A run as read back, its records' times and requests still relative.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Run {
    #[allow(
        dead_code,
        reason = "read so that serde checks the tag; its value is implied by the row"
    )]
    run: RunKind,
    function: String,
    secret: Option<String>,
    #[serde(default)]
    digest: Option<String>,
    shapes: Vec<Shape>,
    records: Vec<(i64, i64, usize)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timed(at_ms: Millis, event: FunctionEvent) -> Timed {
        Timed {
            at_ms,
            event: Event::Function(event),
        }
    }

    fn decoded(records: &[Timed]) -> Vec<Timed> {
        let refs: Vec<&Timed> = records.iter().collect();
        let body = encode(&refs).expect("a run");
        decode(&body)
            .expect("decodes")
            .into_iter()
            .map(|(at_ms, event)| Timed { at_ms, event })
            .collect()
    }

    #[test]
    fn every_field_round_trips_including_extreme_times_and_ids() {
        let base = FunctionEvent {
            secret: Some("s".into()),
            ..FunctionEvent::example("f", 7)
        };
        let records = vec![
            timed(1_796_178_435_698, base.clone()),
            timed(
                1_796_178_435_697, // a clock stepped back
                FunctionEvent {
                    request: 3,
                    version: Some(u32::MAX),
                    operation: "inject".into(),
                    outcome: OpOutcome::Denied,
                    destination: Some("api.example.com".into()),
                    ..base.clone()
                },
            ),
            timed(
                i64::MIN,
                FunctionEvent {
                    request: u64::MAX,
                    binding: "\"quoted\"\n".into(),
                    outcome: OpOutcome::Invalid,
                    reason: Some("name too long".into()),
                    ..base.clone()
                },
            ),
            timed(
                i64::MAX,
                FunctionEvent {
                    request: 0,
                    destination: Some("h".into()),
                    reason: Some("r".into()),
                    ..base.clone()
                },
            ),
            timed(5, base.clone()),
        ];
        assert_eq!(decoded(&records), records);

        // One run needs one function and secret throughout.
        let mut other_secret = records.clone();
        if let Event::Function(e) = &mut other_secret[2].event {
            e.secret = None;
        }
        let refs: Vec<&Timed> = other_secret.iter().collect();
        assert_eq!(encode(&refs), None, "with and without a secret: two runs");
        let mut other_code = records.clone();
        if let Event::Function(e) = &mut other_code[1].event {
            e.digest = Some("d2".into());
        }
        let refs: Vec<&Timed> = other_code.iter().collect();
        assert_eq!(encode(&refs), None, "two components: two runs");
        let mut unbound = records.clone();
        for timed in &mut unbound {
            if let Event::Function(e) = &mut timed.event {
                e.digest = None;
            }
        }
        assert_eq!(decoded(&unbound), unbound, "records without a digest");
    }

    #[test]
    fn many_shapes_keep_their_records_in_order() {
        // A guest guessing binding names: every record its own shape, past
        // the point where shapes are looked up by hash, with repeats.
        let records: Vec<Timed> = (0..300u64)
            .map(|i| {
                let mut event = FunctionEvent::example("guesser", 1000 + i / 3);
                event.binding = format!("GUESS_{}", i % 100).into();
                timed(1_000 + i as i64, event)
            })
            .collect();
        assert_eq!(decoded(&records), records);
        let refs: Vec<&Timed> = records.iter().collect();
        let body = encode(&refs).unwrap();
        assert_eq!(body.matches("GUESS_").count(), 100, "each shape once");
    }

    #[test]
    fn a_run_is_a_small_fraction_of_the_records_one_by_one() {
        let records: Vec<Timed> = (0..1000u64)
            .map(|i| {
                let mut event = FunctionEvent::example("webhook-verify", 40_000 + i / 2);
                event.binding = "GITHUB_WEBHOOK".into();
                event.secret = Some("gh-webhook".into());
                event.version = Some(1);
                event.operation = if i % 2 == 0 {
                    "get"
                } else {
                    "verify-hmac-sha256"
                }
                .into();
                event.outcome = OpOutcome::Allowed;
                timed(1_796_178_435_698 + i as i64 / 20, event)
            })
            .collect();
        let refs: Vec<&Timed> = records.iter().collect();
        let compact = encode(&refs).unwrap().len();
        let one_by_one: usize = records
            .iter()
            .map(|t| {
                serde_json::to_string(&super::super::chain::BodyRef {
                    at_ms: t.at_ms,
                    event: &t.event,
                })
                .unwrap()
                .len()
            })
            .sum();
        assert!(compact * 15 < one_by_one, "{compact} vs {one_by_one}");
    }

    #[test]
    fn anything_else_is_not_a_run() {
        let shape = r#"[["b",null,"get","allowed",null,null]]"#;
        for body in [
            String::new(),
            "{}".into(),
            format!(r#"{{"run":"function","function":"f","secret":null,"shapes":{shape},"records":[]}}"#),
            format!(r#"{{"run":"admin","function":"f","secret":null,"shapes":{shape},"records":[[1,1,0]]}}"#),
            format!(r#"{{"run":"function","function":"f","secret":null,"shapes":{shape},"records":[[1,1,1]]}}"#),
            format!(r#"{{"run":"function","function":"f","secret":null,"shapes":{shape},"records":[[1,1]]}}"#),
            format!(r#"{{"run":"function","function":"f","secret":null,"shapes":{shape},"records":[[1,1,0,0]]}}"#),
            format!(r#"{{"run":"function","function":"f","secret":null,"shapes":{shape},"records":[[1,1,-1]]}}"#),
            format!(r#"{{"run":"function","function":"f","secret":null,"shapes":{shape},"extra":1,"records":[[1,1,0]]}}"#),
            r#"{"run":"function","function":"f","secret":null,"shapes":[["b",null,"get","maybe",null,null]],"records":[[1,1,0]]}"#.into(),
            r#"{"run":"function","function":"f","secret":null,"shapes":[["b",null,"get","allowed",null]],"records":[[1,1,0]]}"#.into(),
            r#"{"at_ms":1,"event":{"kind":"lost","records":3}}"#.into(),
        ] {
            assert!(decode(&body).is_none(), "{body}");
        }
        let ok = r#"{"run":"function","function":"f","secret":null,"shapes":[["b",null,"get","not-granted",null,null],["b",2,"inject","allowed","dest",null]],"records":[[5,9,0],[1,-2,1]]}"#;
        let records = decode(ok).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].0, 6);
        let Event::Function(second) = &records[1].1 else {
            panic!()
        };
        assert_eq!(
            (
                second.request,
                second.version,
                second.destination.as_deref()
            ),
            (7, Some(2), Some("dest"))
        );
    }
}
