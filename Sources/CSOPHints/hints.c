// The target's only function is inline in its header; a C target needs one source file.
#include "CSOPHints.h"
