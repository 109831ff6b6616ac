//! WAL positions as the server lays them out, for read-your-writes.
//!
//! `pg_current_wal_insert_lsn()` names the next byte a record would be written to. When the
//! last record ended exactly at the end of a WAL page, that is past the next page's header,
//! a position no replica reports until another record follows (replay positions are record
//! ends): a read waiting for it would wait for unrelated WAL, seconds on a quiet server.
//! [`WalLayout::record_end`] maps such a position back to the page boundary, where every
//! record inserted before it ends. The header sizes depend on the server's build
//! (`pg_control_init()`: alignment, WAL block and segment size), read by the monitor.

/// The server's WAL page geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalLayout {
    /// `max_data_alignment`: header sizes are rounded up to it.
    pub align: u64,
    /// `wal_block_size`: a page.
    pub block: u64,
    /// `bytes_per_wal_segment`: the first page of a segment has the long header.
    pub segment: u64,
}

impl WalLayout {
    /// From `pg_control_init()`'s three values; `None` when they make no sense.
    pub fn new(align: u64, block: u64, segment: u64) -> Option<WalLayout> {
        let sane = align.is_power_of_two() && block.is_power_of_two() && segment.is_power_of_two();
        (sane && block >= 1024 && segment >= block && align <= 64).then_some(WalLayout { align, block, segment })
    }

    fn aligned(&self, size: u64) -> u64 {
        size.div_ceil(self.align) * self.align
    }

    /// `XLogPageHeaderData` (20 bytes) aligned.
    fn short_header(&self) -> u64 {
        self.aligned(20)
    }

    /// `XLogLongPageHeaderData` (36 bytes) aligned.
    fn long_header(&self) -> u64 {
        self.aligned(36)
    }

    /// The position every record inserted before `insert` (an insert position) has ended
    /// by, as replicas report replay: the page boundary when `insert` is the first byte
    /// after a page header, else `insert` itself.
    pub fn record_end(&self, insert: u64) -> u64 {
        let in_segment = insert % self.segment;
        if in_segment == self.long_header() {
            insert - self.long_header()
        } else if in_segment >= self.block && insert % self.block == self.short_header() {
            insert - self.short_header()
        } else {
            insert
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_positions_right_after_a_page_header_map_back_to_the_boundary() {
        let l = WalLayout::new(8, 8192, 16 << 20).expect("layout");
        // Seen on a test cluster: the commit ended at 0/3014000; the insert position
        // 0/3014018 is past the page header, and the replica stays at 0/3014000.
        assert_eq!(l.record_end(0x301_4018), 0x301_4000);
        assert_eq!(l.record_end(0x300_0028), 0x300_0000, "a segment's first page: the long header");
        assert_eq!(l.record_end(0x301_4020), 0x301_4020, "a record's end, not a header's");
        assert_eq!(l.record_end(0x301_4050), 0x301_4050);
        assert_eq!(l.record_end(0x300_0018), 0x300_0018, "inside a long header is no insert position: left as is");
        assert_eq!(l.record_end(0x301_4028), 0x301_4028, "40 bytes in is a record end on a short-header page");
        // Four-byte alignment: 20 and 36 byte headers.
        let narrow = WalLayout::new(4, 8192, 16 << 20).expect("layout");
        assert_eq!(narrow.record_end(0x301_4014), 0x301_4000);
        assert_eq!(narrow.record_end(0x301_4018), 0x301_4018, "24 bytes in is a record end here");
        assert_eq!(narrow.record_end(0x300_0024), 0x300_0000);
    }

    #[test]
    fn nonsense_layouts_are_refused() {
        assert_eq!(WalLayout::new(0, 8192, 16 << 20), None);
        assert_eq!(WalLayout::new(8, 1000, 16 << 20), None);
        assert_eq!(WalLayout::new(8, 8192, 4096), None);
    }
}
