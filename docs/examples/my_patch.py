"""mm/migrate_device: count the isolation reference in migrate_vma_check_page()

A plugin for pagerace (docs/your-patch.md): today's v6 protocol with one line of
migrate_vma_check_page() changed the way the patch below changes it.

    --- a/mm/migrate_device.c
    +++ b/mm/migrate_device.c
    @@ static bool migrate_vma_check_page(struct page *page, struct page *fault_page)
     {
    -	int extra = 1 + (page == fault_page);
    +	/* collect's reference and the LRU isolation reference */
    +	int extra = 2 + (page == fault_page);

The patch assumes that the page still holds both collect's reference and the isolation
reference when it is checked; but migrate_device_unmap() drops collect's reference right
after folio_isolate_lru(), so the check now lets one reference too many through: a page
pinned by GUP (one pin) looks unpinned and is migrated under the DMA.
"""

from pagerace.extend import V6, Kernel, register_variant


def check_page_patched(k: Kernel, pfn: int, fault_page: int) -> bool:
    """``migrate_vma_check_page()`` with the patch applied (compare
    ``pagerace.core.mm.migrate_device.page_refs_beyond_mappings``)."""
    extra = 2 + (1 if pfn == fault_page else 0)  # the patched line (was: 1 + ...)
    if k.is_zone_device(pfn):
        extra += 1
    return not k.ref_count(pfn) - extra > k.mapcount(pfn)


@register_variant
class V6CheckPagePatch(V6):
    """v6 with the patch above."""

    name = "v6-check-page-patch"
    description = "v6 with migrate_vma_check_page() counting collect's reference twice"

    def check_page(self, k: Kernel, pfn: int, fault_page: int) -> bool:
        return check_page_patched(k, pfn, fault_page)

