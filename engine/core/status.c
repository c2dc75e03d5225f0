/* Status codes: names for scripts, descriptions for people. */
#include "core/core.h"

const char *mr_status_name(mr_status st) {
  switch (st) {
  case MR_OK: return "MR_OK";
  case MR_EINVAL: return "MR_EINVAL";
  case MR_ENOMEM: return "MR_ENOMEM";
  case MR_EDEVMEM: return "MR_EDEVMEM";
  case MR_EIO: return "MR_EIO";
  case MR_EFORMAT: return "MR_EFORMAT";
  case MR_EUNSUPPORTED: return "MR_EUNSUPPORTED";
  case MR_EVULKAN: return "MR_EVULKAN";
  case MR_ECANCELED: return "MR_ECANCELED";
  case MR_ENOTFOUND: return "MR_ENOTFOUND";
  case MR_ENODEVICE: return "MR_ENODEVICE";
  }
  return "MR_EUNKNOWN";
}

const char *mr_status_str(mr_status st) {
  switch (st) {
  case MR_OK: return "success";
  case MR_EINVAL: return "invalid argument";
  case MR_ENOMEM: return "out of host memory";
  case MR_EDEVMEM: return "out of device memory";
  case MR_EIO: return "input/output error";
  case MR_EFORMAT: return "malformed file";
  case MR_EUNSUPPORTED: return "not supported";
  case MR_EVULKAN: return "Vulkan error";
  case MR_ECANCELED: return "canceled";
  case MR_ENOTFOUND: return "not found";
  case MR_ENODEVICE: return "no usable Vulkan device";
  }
  return "unknown status";
}
