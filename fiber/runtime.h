/*
 * runtime.h - the fiber runtime alone: scheduler, butex and the locks on
 * it, timers, fiber-local storage, pools, metrics, clock and log. For
 * programs (and builds, see the runtime_only option) that use weft's
 * fibers without its network and RPC layers; weft.h includes it.
 */
#ifndef WEFT_FIBER_RUNTIME_H
#define WEFT_FIBER_RUNTIME_H

#include "fiber/butex.h"
#include "fiber/clock.h"
#include "fiber/error.h"
#include "fiber/fiber.h"
#include "fiber/histogram.h"
#include "fiber/log.h"
#include "fiber/metrics.h"
#include "fiber/pool.h"
#include "fiber/sync.h"
#include "fiber/timer.h"

#endif
