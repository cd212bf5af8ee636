//! Answers wait for the state they rest on; a lost save stops the signer.

use super::*;

/// Keeps its saves waiting until the test says how they went.
#[derive(Clone, Default)]
struct HeldSaves(Arc<Mutex<Vec<crate::state::SaveDone>>>);

impl HeldSaves {
    fn finish(&self, ok: bool) -> usize {
        let held: Vec<_> = lock(&self.0).drain(..).collect();
        let n = held.len();
        for saved in held {
            saved(if ok {
                Ok(())
            } else {
                Err(StateError::Corrupt {
                    path: "held".into(),
                    reason: "the disk is full".into(),
                })
            });
        }
        n
    }
}

impl StateStore for HeldSaves {
    fn load(&mut self) -> Result<SignerState, StateError> {
        Ok(SignerState::default())
    }
    fn save(&mut self, _: &SignerState) -> Result<(), StateError> {
        unreachable!("the signer submits its changes")
    }
    fn submit_change(
        &mut self,
        _: &SignerState,
        _: &crate::state::StateChange,
        saved: crate::state::SaveDone,
    ) {
        lock(&self.0).push(saved);
    }
}

/// Whether `answer` may be sent now (without waiting), and what it says.
fn settled_now(answer: Answer) -> Option<Result<Response, SignerError>> {
    use std::future::Future;
    let mut settled = std::pin::pin!(answer.settled());
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match settled.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(result) => Some(result),
        std::task::Poll::Pending => None,
    }
}

#[test]
fn answers_wait_for_the_state_they_rest_on_and_a_lost_save_stops_the_signer() {
    let saves = HeldSaves::default();
    let signer = signer_with(Policy::new(limits()), Box::new(saves.clone()));
    let keys = signer.answer(Request::NewChannelKeys { count: 1 });
    let Some(Ok(Response::ChannelKeys(sets))) = settled_now(keys) else {
        panic!("fresh keys change no state");
    };
    let points = || Request::PerCommitmentPoints {
        keys_id: sets[0].keys_id,
        first: TOP,
        count: 1,
    };
    let ch = Channel::unapproved(&signer, 1, false);
    let approval = signer.answer(ch.approval(0));
    // Computed at once, but held until the approval is on disk; so is an answer that
    // changed nothing itself, since it was computed from the unsaved state.
    let after = signer.answer(points());
    assert!(settled_now(signer.answer(points())).is_none());
    assert_eq!(saves.finish(true), 1, "one save per change");
    assert!(matches!(
        settled_now(approval),
        Some(Ok(Response::Accepted))
    ));
    assert!(matches!(settled_now(after), Some(Ok(Response::Points(_)))));

    // A save that fails withholds its answer, and the signer answers nothing more.
    let tx = ch.counterparty_tx(TOP, 400_000, vec![]);
    let signed = signer.answer(Request::SignCounterpartyCommitment {
        keys_id: ch.keys_id,
        params: ch.params.clone(),
        tx,
        inbound_preimages: vec![],
        outbound_preimages: vec![],
        revocation: None,
    });
    assert!(settled_now(signer.answer(points())).is_none());
    assert!(!signer.broken());
    saves.finish(false);
    assert!(signer.broken());
    assert!(matches!(
        settled_now(signed),
        Some(Err(SignerError::Unavailable))
    ));
    assert!(matches!(
        signer.handle(points()),
        Err(SignerError::Unavailable)
    ));
    assert_eq!(saves.finish(true), 0, "nothing more was submitted");
}
