/* blk mode=hostile (blk-hostile.c, docs/guest.md). */
#ifndef GUEST_BLK_HOSTILE_H
#define GUEST_BLK_HOSTILE_H

/*
 * blk_hostile_main: run the case named by case=N on the command line
 * against virtio-blk disk 0, reset it, check it and disk 1 (if any) work;
 * print the HOSTILE line.  Returns the exit code.  BSP only.
 */
int blk_hostile_main(void);

#endif
