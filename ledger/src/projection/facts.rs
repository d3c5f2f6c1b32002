//! Where the facts about items and accounts are read from.
//!
//! A [`Projection`] in memory holds every item; a long-running writer keeps
//! only the items it touched lately and reads the rest from where it saved
//! them, so that its memory does not grow with the number of items. What
//! judges items (the monitor, status counts) reads through this trait and
//! works the same over both. Pure: the store implements it over its saved
//! projection.

use std::borrow::Cow;
use std::ops::ControlFlow;

use thiserror::Error;

use super::{AccountState, DeclaredImport, ItemState, Projection, account_key};

/// A saved item or account could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("reading the saved projection: {0}")]
pub struct FactsError(pub String);

/// Read access to the facts of every item and account.
pub trait Facts {
    /// The facts about one item, if any were recorded.
    fn item(&self, id: &str) -> Result<Option<Cow<'_, ItemState>>, FactsError>;
    /// The account-wide facts about one account (by
    /// [`super::account_key`]).
    fn account(&self, key: &str) -> Result<Option<Cow<'_, AccountState>>, FactsError>;
    /// The account-wide facts about the account `item` belongs to.
    fn account_of(&self, item: &ItemState) -> Result<Option<Cow<'_, AccountState>>, FactsError> {
        match &item.account {
            Some(a) => self.account(&account_key(a)),
            None => Ok(None),
        }
    }
    /// Visits every item once, in item-id order.
    fn each_item(&self, visit: &mut dyn FnMut(&ItemState)) -> Result<(), FactsError> {
        self.items_from("", &mut |item| {
            visit(item);
            ControlFlow::Continue(())
        })
    }
    /// Visits the items whose id is `from` or after, in item-id order,
    /// until `visit` breaks: a walk over every item in pieces.
    fn items_from(
        &self,
        from: &str,
        visit: &mut dyn FnMut(&ItemState) -> ControlFlow<()>,
    ) -> Result<(), FactsError>;
    /// Declared imports of history, in ledger order.
    fn imports(&self) -> &[DeclaredImport];
    /// An item id about halfway through the items in id order, to walk
    /// them in two parts side by side; `None` where there is no cheap
    /// answer (then one part).
    fn middle_item(&self) -> Option<String> {
        None
    }
}

impl Facts for Projection {
    fn item(&self, id: &str) -> Result<Option<Cow<'_, ItemState>>, FactsError> {
        Ok(self.items.get(id).map(Cow::Borrowed))
    }

    fn account(&self, key: &str) -> Result<Option<Cow<'_, AccountState>>, FactsError> {
        Ok(self.accounts.get(key).map(Cow::Borrowed))
    }

    fn items_from(
        &self,
        from: &str,
        visit: &mut dyn FnMut(&ItemState) -> ControlFlow<()>,
    ) -> Result<(), FactsError> {
        for item in self
            .items
            .range::<str, _>((std::ops::Bound::Included(from), std::ops::Bound::Unbounded))
            .map(|(_, item)| item)
        {
            if visit(item).is_break() {
                break;
            }
        }
        Ok(())
    }

    fn imports(&self) -> &[DeclaredImport] {
        &self.imports
    }
}
