#pragma once
// Seconds on a monotonic clock.
double time_now(void);
