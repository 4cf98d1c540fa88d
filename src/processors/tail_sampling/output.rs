//! Re-encoding kept spans as `ExportTraceServiceRequest`s: spans are grouped under their
//! resource and scope, whose encoded fields are copied as they arrived, as are the spans.

use std::collections::HashMap;

use bytes::Bytes;

use crate::otlp::wire::{len_field_len, write_len_field};
use crate::otlp::{Batch, Signal};

const REQUEST_RESOURCES: u32 = 1;
const CHILDREN: u32 = 2;
/// Where an output request is cut, so one decision tick never builds an unbounded message.
const MAX_SPANS: usize = 8192;
const MAX_BYTES: usize = 4 * 1024 * 1024;

struct ScopeGroup {
    scope: Vec<u8>,
    /// Each span as an encoded `ScopeSpans.spans` field.
    spans: Vec<u8>,
}

struct ResourceGroup {
    resource: Vec<u8>,
    scopes: Vec<ScopeGroup>,
}

/// Spans on their way out, grouped by envelope.
#[derive(Default)]
pub struct OutputBuilder {
    groups: Vec<ResourceGroup>,
    /// (resource, scope) bytes → (group, scope) index.
    slots: HashMap<(Vec<u8>, Vec<u8>), (usize, usize)>,
    key: (Vec<u8>, Vec<u8>),
    spans: usize,
    bytes: usize,
    /// Bumped by every `finish_into`, which invalidates the slots handed out before.
    generation: u64,
}

/// Where spans of one envelope go, from [`OutputBuilder::slot`]; valid until the next
/// [`OutputBuilder::finish_into`].
#[derive(Clone, Copy, Debug)]
pub struct Slot(usize, usize, u64);

impl OutputBuilder {
    /// The slot for spans sent under `resource` (the `ResourceSpans` fields but its scopes)
    /// and `scope` (the `ScopeSpans` fields but its spans).
    pub fn slot(&mut self, resource: &[u8], scope: &[u8]) -> Slot {
        self.key.0.clear();
        self.key.0.extend_from_slice(resource);
        self.key.1.clear();
        self.key.1.extend_from_slice(scope);
        if let Some(&(g, s)) = self.slots.get(&self.key) {
            return Slot(g, s, self.generation);
        }
        let g = match self.groups.iter().position(|g| g.resource == resource) {
            Some(g) => g,
            None => {
                self.groups.push(ResourceGroup {
                    resource: resource.to_vec(),
                    scopes: Vec::new(),
                });
                self.bytes += resource.len() + 8;
                self.groups.len() - 1
            }
        };
        let scopes = &mut self.groups[g].scopes;
        scopes.push(ScopeGroup {
            scope: scope.to_vec(),
            spans: Vec::new(),
        });
        self.bytes += scope.len() + 8;
        let s = scopes.len() - 1;
        self.slots.insert(self.key.clone(), (g, s));
        Slot(g, s, self.generation)
    }

    pub fn is_valid(&self, slot: Slot) -> bool {
        slot.2 == self.generation
    }

    /// Adds a span under a slot of the current generation (a stale slot is a bug: the span
    /// would land under the wrong envelope, so it is refused loudly in debug builds).
    pub fn push(&mut self, slot: Slot, span: &[u8]) {
        debug_assert!(self.is_valid(slot), "stale output slot");
        if !self.is_valid(slot) {
            return;
        }
        if let Some(scope) = self
            .groups
            .get_mut(slot.0)
            .and_then(|g| g.scopes.get_mut(slot.1))
        {
            write_len_field(CHILDREN, span, &mut scope.spans);
            self.spans += 1;
            self.bytes += span.len() + 6;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.spans == 0
    }

    pub fn is_full(&self) -> bool {
        self.spans >= MAX_SPANS || self.bytes >= MAX_BYTES
    }

    /// Emits what was gathered as one batch, if anything; slots are invalid afterwards.
    pub fn finish_into(&mut self, out: &mut Vec<Batch>) {
        self.generation += 1;
        self.slots.clear();
        let groups = std::mem::take(&mut self.groups);
        let spans = std::mem::take(&mut self.spans);
        self.bytes = 0;
        if spans == 0 {
            return;
        }
        let scope_len = |s: &ScopeGroup| s.scope.len() + s.spans.len();
        let resource_len = |g: &ResourceGroup| {
            g.resource.len()
                + g.scopes
                    .iter()
                    .filter(|s| !s.spans.is_empty())
                    .map(|s| len_field_len(CHILDREN, scope_len(s)))
                    .sum::<usize>()
        };
        let live = |g: &&ResourceGroup| g.scopes.iter().any(|s| !s.spans.is_empty());
        let total: usize = groups
            .iter()
            .filter(live)
            .map(|g| len_field_len(REQUEST_RESOURCES, resource_len(g)))
            .sum();
        let mut buf = Vec::with_capacity(total);
        let mut body = Vec::new();
        for g in groups.iter().filter(live) {
            body.clear();
            body.extend_from_slice(&g.resource);
            for s in g.scopes.iter().filter(|s| !s.spans.is_empty()) {
                crate::otlp::wire::encode_varint(
                    (u64::from(CHILDREN) << 3) | u64::from(crate::otlp::wire::WIRE_LEN),
                    &mut body,
                );
                crate::otlp::wire::encode_varint(scope_len(s) as u64, &mut body);
                body.extend_from_slice(&s.scope);
                body.extend_from_slice(&s.spans);
            }
            write_len_field(REQUEST_RESOURCES, &body, &mut buf);
        }
        out.push(Batch::new(Signal::Traces, Bytes::from(buf), spans));
    }
}
