/*
 * aio=threads: every request is a job on the context's thread pool; the
 * pool's completion runs in the context's home thread.
 */
#include "block-int.h"
#include "shardvm/thread-pool.h"

static int worker(void *arg)
{
    return blk_req_run_sync(arg);
}

static void job_done(void *opaque, int ret)
{
    BlockRequest *req = opaque;

    req->rmw = false; /* a write-through flush may follow */
    blk_req_done(req, ret);
}

void blk_threads_submit(BlockRequest *req)
{
    thread_pool_submit(req->q->ctx, worker, req, job_done, req);
}

static void threads_submit(BlockRequest *req)
{
    blk_threads_submit(req);
}

const BlockDriverOps blk_drv_threads = {
    .name = "threads",
    .submit = threads_submit,
};
