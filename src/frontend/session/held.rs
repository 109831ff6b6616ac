//! The server connections a session holds, by node slot. Empty until the session first
//! uses a node (an idle client holds nothing), and grown as nodes are used, including
//! nodes a reload added after the session began.

use crate::backend::Checked;

#[derive(Default)]
pub(super) struct Held(Vec<Option<Checked>>);

impl Held {
    pub(super) fn get(&self, node: usize) -> Option<&Checked> {
        self.0.get(node)?.as_ref()
    }

    pub(super) fn get_mut(&mut self, node: usize) -> Option<&mut Checked> {
        self.0.get_mut(node)?.as_mut()
    }

    pub(super) fn take(&mut self, node: usize) -> Option<Checked> {
        self.0.get_mut(node)?.take()
    }

    pub(super) fn put(&mut self, node: usize, conn: Checked) {
        if self.0.len() <= node {
            self.0.resize_with(node + 1, || None);
        }
        self.0[node] = Some(conn);
    }

    /// Drops the connection held for `node`, if any (closing it).
    pub(super) fn drop_conn(&mut self, node: usize) {
        drop(self.take(node));
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Checked> {
        self.0.iter().flatten()
    }

    /// Takes every connection held.
    pub(super) fn drain(&mut self) -> impl Iterator<Item = Checked> + '_ {
        self.0.drain(..).flatten()
    }
}
