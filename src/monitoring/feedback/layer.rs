//! The feedback layer of the inference stack: after the core answered a request of a model with a `[feedback]`
//! policy, it keeps the prediction under the request's key. Requests of other models pass through untouched.

use std::task::{Context, Poll};

use tower::{Layer, Service};

use super::Feedback;
use crate::inference::{InferCall, InferFuture, InferenceError, Inferred};

#[derive(Clone)]
pub struct FeedbackLayer {
    feedback: Feedback,
}

impl FeedbackLayer {
    pub fn new(feedback: Feedback) -> FeedbackLayer {
        FeedbackLayer { feedback }
    }
}

impl<S> Layer<S> for FeedbackLayer {
    type Service = Recording<S>;
    fn layer(&self, inner: S) -> Recording<S> {
        Recording {
            inner,
            feedback: self.feedback.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Recording<S> {
    inner: S,
    feedback: Feedback,
}

impl<S> Service<InferCall> for Recording<S>
where
    S: Service<InferCall, Response = Inferred, Error = InferenceError, Future = InferFuture>
        + Send
        + 'static,
{
    type Response = Inferred;
    type Error = InferenceError;
    type Future = InferFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), InferenceError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: InferCall) -> Self::Future {
        let Some(policy) = self.feedback.policy(&call.model) else {
            return self.inner.call(call);
        };
        // The shadow layer (outside this one) asks for the inputs of the requests it mirrors.
        let mirrored = call.capture_inputs;
        let feedback = self.feedback.clone();
        // The V2 id (known once answered) comes first; the x-request-id's key is taken now, to keep no copy.
        let by_request_id = Feedback::request_key(None, call.metadata.request_id())
            .map(|id| feedback.key(&call.model, id));
        let future = self.inner.call(call);
        Box::pin(async move {
            let done = future.await?;
            let key = Feedback::request_key(done.id.as_deref(), None)
                .map(|id| feedback.key(&done.model.name, id))
                .or(by_request_id);
            match key {
                Some(key) => feedback.record(&policy, key, &done, mirrored),
                None => feedback.unkeyed(&done.model.name),
            }
            Ok(done)
        })
    }
}
