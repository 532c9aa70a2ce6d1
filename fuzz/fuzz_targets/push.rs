//! Push messages as the parameter server decodes them: a protobuf push,
//! its gradient decoded as f32 or bf16, then applied to a store in sync
//! mode. Nothing panics, and θ changes only when a push is applied.
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
    };
    let clock = StepClock::new(vec![3, 2], 1).expect("valid clock");
    let mut store = ParamStore::new("fuzz".into(), vec![0.5, -0.5, 1.0], sgd)
        .expect("valid store")
        .with_consistency(Consistency::Sync, Some(clock))
        .expect("sync store");
    let mut gradient = [0.0f32; 3];
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
