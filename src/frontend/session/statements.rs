//! The client's prepared statements (by its names) and the portals bound in its open
//! transaction, as one server would hold them for it.

use std::collections::HashMap;
use std::sync::Arc;

use crate::classify::Class;
use crate::frontend::prepared::Prepared;

/// Portals remembered per session (named portals beyond this are forgotten oldest first;
/// an Execute of a forgotten one counts as a write).
const MAX_PORTALS: usize = 64;

#[derive(Default)]
pub(super) struct Statements {
    pub named: HashMap<String, Arc<Prepared>>,
    pub unnamed: Option<Arc<Prepared>>,
    /// Portals bound in the open transaction, with their statement's class (an Execute
    /// runs one statement of that class).
    pub portals: Vec<(String, Arc<Class>)>,
}

impl Statements {
    /// The statement a Bind or Describe names (`""`: the unnamed one).
    pub fn resolve(&self, name: &str) -> Option<Arc<Prepared>> {
        if name.is_empty() {
            self.unnamed.clone()
        } else {
            self.named.get(name).cloned()
        }
    }

    /// A portal bound in the open transaction; a rebind replaces it. Portals end with
    /// their transaction; the list is cleared when the session is idle and bounded.
    pub fn bind_portal(&mut self, portal: String, class: Arc<Class>) {
        self.portals.retain(|(p, _)| *p != portal);
        if self.portals.len() >= MAX_PORTALS {
            self.portals.remove(0);
        }
        self.portals.push((portal, class));
    }
}
