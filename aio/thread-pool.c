/* placeholder until the thread pool lands */
#include "aio-internal.h"
void thread_pool_free(struct ThreadPool *pool) { (void)pool; }
