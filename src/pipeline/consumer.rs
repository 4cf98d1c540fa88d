//! What a receiver hands its data to: the inputs of every pipeline that lists it, with the
//! memory limiters of those pipelines. A full pipeline makes the receiver wait a little and
//! then refuse, so clients back off instead of the agent buffering without bound.

use std::time::Duration;

use tokio::sync::mpsc;

use super::ack::Ack;
use crate::otlp::Batch;
use crate::processors::memory_limiter::MemoryGate;

/// Why data was not accepted. Both are retryable for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A pipeline is full or memory is above the limit.
    Overloaded,
    /// The agent is shutting down.
    ShuttingDown,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Overloaded => {
                f.write_str("the pipeline is full or memory is above the limit; retry later")
            }
            Refusal::ShuttingDown => f.write_str("the agent is shutting down; retry later"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct PipelineInput {
    pub pipeline: String,
    pub tx: mpsc::Sender<Batch>,
    pub gates: Vec<MemoryGate>,
}

/// The pipelines one receiver feeds for one signal.
#[derive(Clone, Debug)]
pub struct Consumer {
    inputs: Vec<PipelineInput>,
    wait: Duration,
}

impl Consumer {
    pub fn new(inputs: Vec<PipelineInput>) -> Consumer {
        Consumer {
            inputs,
            wait: Duration::from_secs(1),
        }
    }

    pub fn inputs(&self) -> &[PipelineInput] {
        &self.inputs
    }

    /// Hands a batch to every pipeline. Success means every pipeline took it; on refusal the
    /// batch's acknowledgements are failed, so the sender knows to try again.
    pub async fn consume(&self, batch: Batch) -> Result<(), Refusal> {
        let acks = batch.acks.clone();
        let result = self.send_to_all(batch).await;
        if result.is_err() {
            acks.iter().for_each(Ack::fail);
        }
        result
    }

    async fn send_to_all(&self, batch: Batch) -> Result<(), Refusal> {
        if self
            .inputs
            .iter()
            .any(|i| i.gates.iter().any(MemoryGate::refusing))
        {
            return Err(Refusal::Overloaded);
        }
        let last = self.inputs.len().saturating_sub(1);
        let mut batch = Some(batch);
        for (i, input) in self.inputs.iter().enumerate() {
            let item = if i == last {
                batch.take()
            } else {
                batch.clone()
            };
            let Some(item) = item else { break };
            match input.tx.try_send(item) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(Refusal::ShuttingDown),
                Err(mpsc::error::TrySendError::Full(item)) => {
                    match tokio::time::timeout(self.wait, input.tx.send(item)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return Err(Refusal::ShuttingDown),
                        Err(_) => return Err(Refusal::Overloaded),
                    }
                }
            }
        }
        Ok(())
    }
}
