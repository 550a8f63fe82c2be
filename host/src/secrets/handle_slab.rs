//! The values behind one request's handles of one resource type, by the
//! index (`rep`) the component model hands the guest's handle table.
//!
//! Wasmtime's shared `ResourceTable` boxes every entry as `dyn Any` and
//! downcasts it on every use; a request's secret handles are all one type,
//! opened and dropped in tight loops, so they live here instead: in place,
//! with freed slots reused, and no allocation once the slab has grown to
//! the most handles the request held at once.

/// Values by index, freed indices reused (most recently freed first).
#[derive(Debug)]
pub(crate) struct HandleSlab<T> {
    slots: Vec<Option<T>>,
    /// Exactly the indices whose slot is empty.
    free: Vec<u32>,
}

impl<T> Default for HandleSlab<T> {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T> HandleSlab<T> {
    /// Stores `value` and returns its index.
    pub(crate) fn insert(&mut self, value: T) -> u32 {
        if let Some(index) = self.free.pop() {
            self.slots[index as usize] = Some(value);
            return index;
        }
        self.slots.push(Some(value));
        u32::try_from(self.slots.len() - 1).expect("a request's handles are capped far below u32")
    }

    /// The value at `index`, if one is stored there.
    pub(crate) fn get(&self, index: u32) -> Option<&T> {
        self.slots.get(index as usize)?.as_ref()
    }

    /// Takes the value out of `index`, freeing the index for reuse; `None`
    /// (and nothing changes) if no value is stored there.
    pub(crate) fn remove(&mut self, index: u32) -> Option<T> {
        let value = self.slots.get_mut(index as usize)?.take()?;
        self.free.push(index);
        Some(value)
    }

    /// How many values are stored.
    pub(crate) fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Whether no value is stored.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_come_back_by_their_index_until_removed() {
        let mut slab = HandleSlab::default();
        let a = slab.insert("a");
        let b = slab.insert("b");
        assert_ne!(a, b);
        assert_eq!(
            (slab.get(a), slab.get(b), slab.len()),
            (Some(&"a"), Some(&"b"), 2)
        );
        assert_eq!(slab.remove(a), Some("a"));
        assert_eq!(
            (slab.get(a), slab.get(b), slab.len()),
            (None, Some(&"b"), 1)
        );
    }

    #[test]
    fn an_unknown_or_removed_index_changes_nothing() {
        let mut slab = HandleSlab::default();
        let a = slab.insert(1);
        assert_eq!(slab.remove(a), Some(1));
        assert_eq!(slab.remove(a), None, "removed twice");
        assert_eq!(slab.remove(57_005), None, "never issued");
        assert_eq!(slab.get(u32::MAX), None);
        assert!(slab.is_empty());
        // A double removal must not put the index on the free list twice,
        // which would hand one index to two values.
        let b = slab.insert(2);
        let c = slab.insert(3);
        assert_ne!(b, c);
        assert_eq!((slab.get(b), slab.get(c)), (Some(&2), Some(&3)));
    }

    #[test]
    fn freed_indices_are_reused_before_the_slab_grows() {
        let mut slab = HandleSlab::default();
        let indices: Vec<u32> = (0..4).map(|v| slab.insert(v)).collect();
        slab.remove(indices[1]);
        slab.remove(indices[3]);
        let reused = [slab.insert(10), slab.insert(11)];
        assert_eq!(reused, [indices[3], indices[1]]);
        assert_eq!(slab.insert(12), 4, "grows once no index is free");
        assert_eq!(slab.len(), 5);
    }
}
