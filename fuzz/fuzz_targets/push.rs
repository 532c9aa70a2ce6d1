//! Push messages as the parameter server decodes them: a protobuf push,
//! its gradient decoded as f32 or bf16 (with its u32 positions when the
//! push is sparse), then applied to a store in sync mode. Nothing panics,
//! and θ changes only when a push is applied.
#![no_main]

use downpour_proto::v1::{GradientEncoding, PushRequest};
use downpour_proto::{decode_bf16s_into, decode_f32s_into};
use downpour_ps::{Accepted, Consistency, ParamStore, Push, SgdConfig, StepClock};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = PushRequest::decode(data) else {
        return;
    };
    let sgd = SgdConfig {
        learning_rate: 0.1,
        momentum: 0.9,
        weight_decay: 0.0,
        warmup_updates: 0,
    };
    let clock = StepClock::new(vec![3, 2], 1).expect("valid clock");
    let mut store = ParamStore::new("fuzz".into(), vec![0.5, -0.5, 1.0], sgd)
        .expect("valid store")
        .with_consistency(Consistency::Sync, Some(clock))
        .expect("sync store");
    // A sparse push lists positions in θ, four little-endian bytes each,
    // and one gradient value per position. More positions than θ has
    // values cannot be valid, so they are skipped before allocating.
    let indices: Option<Vec<u32>> = if request.sparse {
        if request.indices.len() % 4 != 0 || request.indices.len() / 4 > 3 {
            return;
        }
        let positions = request
            .indices
            .chunks_exact(4)
            .map(|bytes| u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
            .collect();
        Some(positions)
    } else {
        None
    };
    let mut gradient = vec![0.0f32; indices.as_ref().map_or(3, Vec::len)];
    let decoded = match GradientEncoding::try_from(request.encoding) {
        Ok(GradientEncoding::F32) => decode_f32s_into(&request.gradient, &mut gradient),
        Ok(GradientEncoding::Bf16) => decode_bf16s_into(&request.gradient, &mut gradient),
        Err(_) => return,
    };
    if decoded.is_err() {
        return;
    }
    let before = store.params().to_vec();
    let push = Push {
        worker_id: request.worker_id,
        sequence: request.sequence,
        version: request.version,
        gradient: &gradient,
        indices: indices.as_deref(),
        examples: request.examples,
        loss: request.loss,
        epoch: request.epoch,
        batch: request.batch,
    };
    match store.apply_push(push) {
        Ok(Accepted::Held { .. }) | Err(_) => {}
        Ok(other) => panic!("a sync store returned {other:?}"),
    }
    if store.version() == 0 {
        assert_eq!(store.params(), &before[..]);
    }
});
