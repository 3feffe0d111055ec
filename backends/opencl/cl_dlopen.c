/* SPDX-License-Identifier: MIT */
/* OpenCL backend: the ICD loader (libOpenCL.so.1) is loaded with dlopen on first use, so that
 * libtandem does not NEED it: a program that never opens a runtime, or a machine without the
 * loader, does not load it, and the backend then reports zero devices, as with no platform.
 * The entry points the backend calls are defined here under their OpenCL names with hidden
 * visibility (not exported: a program's own OpenCL calls still go to its loader), so the
 * backend's code stays plain OpenCL; each forwards through a pointer resolved once with dlsym.
 * Env TDM_OPENCL_LIBRARY names another loader (a path or a soname).
 *
 * Why not a separate libtandem-opencl? The core would have to dlopen that plug-in anyway (the
 * backend is probed at every runtime open), with an install layout and an internal ABI between
 * the two; one dlopen of the standard ICD loader does the same with less. A function the
 * backend starts to call must be added to the list below (else the link fails: libOpenCL is no
 * longer linked). */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "ocl_internal.h"

/* return type, name, parameters, arguments */
#define TDM_CL_FUNCS(X)                                                                            \
    X(cl_int, clBuildProgram,                                                                      \
      (cl_program program, cl_uint num_devices, const cl_device_id *device_list,                   \
       const char *options, void(CL_CALLBACK * pfn_notify)(cl_program program, void *user_data),   \
       void *user_data),                                                                           \
      (program, num_devices, device_list, options, pfn_notify, user_data))                         \
    X(cl_mem, clCreateBuffer,                                                                      \
      (cl_context context, cl_mem_flags flags, size_t size, void *host_ptr, cl_int *errcode_ret),  \
      (context, flags, size, host_ptr, errcode_ret))                                               \
    X(cl_command_queue, clCreateCommandQueue,                                                      \
      (cl_context context, cl_device_id device, cl_command_queue_properties properties,            \
       cl_int * errcode_ret),                                                                      \
      (context, device, properties, errcode_ret))                                                  \
    X(cl_context, clCreateContext,                                                                 \
      (const cl_context_properties *properties, cl_uint num_devices, const cl_device_id *devices,  \
       void(CL_CALLBACK * pfn_notify)(const char *errinfo, const void *private_info, size_t cb,    \
                                      void *user_data),                                            \
       void *user_data, cl_int *errcode_ret),                                                      \
      (properties, num_devices, devices, pfn_notify, user_data, errcode_ret))                      \
    X(cl_kernel, clCreateKernel,                                                                   \
      (cl_program program, const char *kernel_name, cl_int *errcode_ret),                          \
      (program, kernel_name, errcode_ret))                                                         \
    X(cl_program, clCreateProgramWithSource,                                                       \
      (cl_context context, cl_uint count, const char **strings, const size_t *lengths,             \
       cl_int *errcode_ret),                                                                       \
      (context, count, strings, lengths, errcode_ret))                                             \
    X(void *, clEnqueueMapBuffer,                                                                  \
      (cl_command_queue command_queue, cl_mem buffer, cl_bool blocking_map,                        \
       cl_map_flags map_flags, size_t offset, size_t size, cl_uint num_events_in_wait_list,        \
       const cl_event *event_wait_list, cl_event *event, cl_int *errcode_ret),                     \
      (command_queue, buffer, blocking_map, map_flags, offset, size, num_events_in_wait_list,      \
       event_wait_list, event, errcode_ret))                                                       \
    X(cl_int, clEnqueueNDRangeKernel,                                                              \
      (cl_command_queue command_queue, cl_kernel kernel, cl_uint work_dim,                         \
       const size_t *global_work_offset, const size_t *global_work_size,                           \
       const size_t *local_work_size, cl_uint num_events_in_wait_list,                             \
       const cl_event *event_wait_list, cl_event *event),                                          \
      (command_queue, kernel, work_dim, global_work_offset, global_work_size, local_work_size,     \
       num_events_in_wait_list, event_wait_list, event))                                           \
    X(cl_int, clEnqueueReadBuffer,                                                                 \
      (cl_command_queue command_queue, cl_mem buffer, cl_bool blocking_read, size_t offset,        \
       size_t size, void *ptr, cl_uint num_events_in_wait_list, const cl_event *event_wait_list,   \
       cl_event *event),                                                                           \
      (command_queue, buffer, blocking_read, offset, size, ptr, num_events_in_wait_list,           \
       event_wait_list, event))                                                                    \
    X(cl_int, clEnqueueUnmapMemObject,                                                             \
      (cl_command_queue command_queue, cl_mem memobj, void *mapped_ptr,                            \
       cl_uint num_events_in_wait_list, const cl_event *event_wait_list, cl_event *event),         \
      (command_queue, memobj, mapped_ptr, num_events_in_wait_list, event_wait_list, event))        \
    X(cl_int, clEnqueueWriteBuffer,                                                                \
      (cl_command_queue command_queue, cl_mem buffer, cl_bool blocking_write, size_t offset,       \
       size_t size, const void *ptr, cl_uint num_events_in_wait_list,                              \
       const cl_event *event_wait_list, cl_event *event),                                          \
      (command_queue, buffer, blocking_write, offset, size, ptr, num_events_in_wait_list,          \
       event_wait_list, event))                                                                    \
    X(cl_int, clFinish, (cl_command_queue command_queue), (command_queue))                         \
    X(cl_int, clGetDeviceIDs,                                                                      \
      (cl_platform_id platform, cl_device_type device_type, cl_uint num_entries,                   \
       cl_device_id * devices, cl_uint * num_devices),                                             \
      (platform, device_type, num_entries, devices, num_devices))                                  \
    X(cl_int, clGetDeviceInfo,                                                                     \
      (cl_device_id device, cl_device_info param_name, size_t param_value_size, void *param_value, \
       size_t *param_value_size_ret),                                                              \
      (device, param_name, param_value_size, param_value, param_value_size_ret))                   \
    X(cl_int, clGetEventInfo,                                                                      \
      (cl_event event, cl_event_info param_name, size_t param_value_size, void *param_value,       \
       size_t *param_value_size_ret),                                                              \
      (event, param_name, param_value_size, param_value, param_value_size_ret))                    \
    X(cl_int, clGetKernelArgInfo,                                                                  \
      (cl_kernel kernel, cl_uint arg_indx, cl_kernel_arg_info param_name, size_t param_value_size, \
       void *param_value, size_t *param_value_size_ret),                                           \
      (kernel, arg_indx, param_name, param_value_size, param_value, param_value_size_ret))         \
    X(cl_int, clGetKernelInfo,                                                                     \
      (cl_kernel kernel, cl_kernel_info param_name, size_t param_value_size, void *param_value,    \
       size_t *param_value_size_ret),                                                              \
      (kernel, param_name, param_value_size, param_value, param_value_size_ret))                   \
    X(cl_int, clGetKernelWorkGroupInfo,                                                            \
      (cl_kernel kernel, cl_device_id device, cl_kernel_work_group_info param_name,                \
       size_t param_value_size, void *param_value, size_t *param_value_size_ret),                  \
      (kernel, device, param_name, param_value_size, param_value, param_value_size_ret))           \
    X(cl_int, clGetPlatformIDs,                                                                    \
      (cl_uint num_entries, cl_platform_id * platforms, cl_uint * num_platforms),                  \
      (num_entries, platforms, num_platforms))                                                     \
    X(cl_int, clGetProgramBuildInfo,                                                               \
      (cl_program program, cl_device_id device, cl_program_build_info param_name,                  \
       size_t param_value_size, void *param_value, size_t *param_value_size_ret),                  \
      (program, device, param_name, param_value_size, param_value, param_value_size_ret))          \
    X(cl_int, clReleaseCommandQueue, (cl_command_queue command_queue), (command_queue))            \
    X(cl_int, clReleaseContext, (cl_context context), (context))                                   \
    X(cl_int, clReleaseEvent, (cl_event event), (event))                                           \
    X(cl_int, clReleaseKernel, (cl_kernel kernel), (kernel))                                       \
    X(cl_int, clRetainEvent, (cl_event event), (event))                                            \
    X(cl_int, clReleaseMemObject, (cl_mem memobj), (memobj))                                       \
    X(cl_int, clReleaseProgram, (cl_program program), (program))                                   \
    X(cl_int, clSetKernelArg,                                                                      \
      (cl_kernel kernel, cl_uint arg_index, size_t arg_size, const void *arg_value),               \
      (kernel, arg_index, arg_size, arg_value))

#define TDM_CL_PTR(ret, name, params, args) static ret(CL_API_CALL *p_##name) params;
TDM_CL_FUNCS(TDM_CL_PTR)

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static int g_loaded;
static char g_why[320];

static void load(void)
{
    const char *lib = getenv("TDM_OPENCL_LIBRARY");
    if (!lib || !*lib)
        lib = "libOpenCL.so.1";
    void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(g_why, sizeof g_why, "dlopen(%s): %s", lib, e ? e : "failed");
        return;
    }
    /* (POSIX: a dlsym result converts to a function pointer through its object representation) */
#define TDM_CL_SYM(ret, name, params, args)                                                        \
    if (!(*(void **)&p_##name = dlsym(h, #name))) {                                                \
        snprintf(g_why, sizeof g_why, "%s: no symbol %s", lib, #name);                             \
        dlclose(h);                                                                                \
        return;                                                                                    \
    }
    TDM_CL_FUNCS(TDM_CL_SYM)
    g_loaded = 1; /* the handle stays open for the life of the process */
}

const char *tdm__cl_load_error(void)
{
    pthread_once(&g_once, load);
    return g_loaded ? NULL : g_why;
}

/* Without a loader, clGetPlatformIDs answers as a loader with no platform does (the backend
 * stops there: zero devices); the others are never reached then, and fail cleanly if they are. */
cl_int CL_API_CALL clGetPlatformIDs(cl_uint num_entries, cl_platform_id *platforms,
                                    cl_uint *num_platforms)
{
    if (tdm__cl_load_error()) {
        if (num_platforms)
            *num_platforms = 0;
        return -1001; /* CL_PLATFORM_NOT_FOUND_KHR */
    }
    return p_clGetPlatformIDs(num_entries, platforms, num_platforms);
}

cl_int CL_API_CALL clBuildProgram(
    cl_program program, cl_uint num_devices, const cl_device_id *device_list, const char *options,
    void(CL_CALLBACK *pfn_notify)(cl_program program, void *user_data), void *user_data)
{
    if (tdm__cl_load_error())
        return CL_INVALID_PLATFORM;
    return p_clBuildProgram(program, num_devices, device_list, options, pfn_notify, user_data);
}

cl_mem CL_API_CALL clCreateBuffer(cl_context context, cl_mem_flags flags, size_t size,
                                  void *host_ptr, cl_int *errcode_ret)
{
    if (tdm__cl_load_error()) {
        if (errcode_ret)
            *errcode_ret = CL_INVALID_PLATFORM;
        return NULL;
    }
    return p_clCreateBuffer(context, flags, size, host_ptr, errcode_ret);
}

cl_command_queue CL_API_CALL clCreateCommandQueue(cl_context context, cl_device_id device,
                                                  cl_command_queue_properties properties,
                                                  cl_int *errcode_ret)
{
    if (tdm__cl_load_error()) {
        if (errcode_ret)
            *errcode_ret = CL_INVALID_PLATFORM;
        return NULL;
    }
    return p_clCreateCommandQueue(context, device, properties, errcode_ret);
}

cl_context CL_API_CALL clCreateContext(const cl_context_properties *properties, cl_uint num_devices,
                                       const cl_device_id *devices,
                                       void(CL_CALLBACK *pfn_notify)(const char *errinfo,
                                                                     const void *private_info,
                                                                     size_t cb, void *user_data),
                                       void *user_data, cl_int *errcode_ret)
{
    if (tdm__cl_load_error()) {
        if (errcode_ret)
            *errcode_ret = CL_INVALID_PLATFORM;
        return NULL;
    }
    return p_clCreateContext(properties, num_devices, devices, pfn_notify, user_data, errcode_ret);
}

cl_kernel CL_API_CALL clCreateKernel(cl_program program, const char *kernel_name,
                                     cl_int *errcode_ret)
{
    if (tdm__cl_load_error()) {
        if (errcode_ret)
            *errcode_ret = CL_INVALID_PLATFORM;
        return NULL;
    }
    return p_clCreateKernel(program, kernel_name, errcode_ret);
}

cl_program CL_API_CALL clCreateProgramWithSource(cl_context context, cl_uint count,
                                                 const char **strings, const size_t *lengths,
                                                 cl_int *errcode_ret)
{
    if (tdm__cl_load_error()) {
        if (errcode_ret)
            *errcode_ret = CL_INVALID_PLATFORM;
        return NULL;
    }
    return p_clCreateProgramWithSource(context, count, strings, lengths, errcode_ret);
}

void *CL_API_CALL clEnqueueMapBuffer(cl_command_queue command_queue, cl_mem buffer,
                                     cl_bool blocking_map, cl_map_flags map_flags, size_t offset,
                                     size_t size, cl_uint num_events_in_wait_list,
                                     const cl_event *event_wait_list, cl_event *event,
                                     cl_int *errcode_ret)
{
    if (tdm__cl_load_error()) {
        if (errcode_ret)
            *errcode_ret = CL_INVALID_PLATFORM;
        return NULL;
    }
    return p_clEnqueueMapBuffer(command_queue, buffer, blocking_map, map_flags, offset, size,
                                num_events_in_wait_list, event_wait_list, event, errcode_ret);
}

cl_int CL_API_CALL clEnqueueNDRangeKernel(cl_command_queue command_queue, cl_kernel kernel,
                                          cl_uint work_dim, const size_t *global_work_offset,
                                          const size_t *global_work_size,
                                          const size_t *local_work_size,
                                          cl_uint num_events_in_wait_list,
                                          const cl_event *event_wait_list, cl_event *event)
{
    if (tdm__cl_load_error())
        return CL_INVALID_PLATFORM;
    return p_clEnqueueNDRangeKernel(command_queue, kernel, work_dim, global_work_offset,
                                    global_work_size, local_work_size, num_events_in_wait_list,
                                    event_wait_list, event);
}

cl_int CL_API_CALL clEnqueueReadBuffer(cl_command_queue command_queue, cl_mem buffer,
                                       cl_bool blocking_read, size_t offset, size_t size, void *ptr,
                                       cl_uint num_events_in_wait_list,
                                       const cl_event *event_wait_list, cl_event *event)
{
    if (tdm__cl_load_error())
        return CL_INVALID_PLATFORM;
    return p_clEnqueueReadBuffer(command_queue, buffer, blocking_read, offset, size, ptr,
                                 num_events_in_wait_list, event_wait_list, event);
}

cl_int CL_API_CALL clEnqueueUnmapMemObject(cl_command_queue command_queue, cl_mem memobj,
                                           void *mapped_ptr, cl_uint num_events_in_wait_list,
                                           const cl_event *event_wait_list, cl_event *event)
{
    if (tdm__cl_load_error())
        return CL_INVALID_PLATFORM;
    return p_clEnqueueUnmapMemObject(command_queue, memobj, mapped_ptr, num_events_in_wait_list,
                                     event_wait_list, event);
}

cl_int CL_API_CALL clEnqueueWriteBuffer(cl_command_queue command_queue, cl_mem buffer,
                                        cl_bool blocking_write, size_t offset, size_t size,
                                        const void *ptr, cl_uint num_events_in_wait_list,
                                        const cl_event *event_wait_list, cl_event *event)
{
    if (tdm__cl_load_error())
        return CL_INVALID_PLATFORM;
    return p_clEnqueueWriteBuffer(command_queue, buffer, blocking_write, offset, size, ptr,
                                  num_events_in_wait_list, event_wait_list, event);
}

cl_int CL_API_CALL clFinish(cl_command_queue command_queue)
{
    if (tdm__cl_load_error())
        return CL_INVALID_PLATFORM;
    return p_clFinish(command_queue);
}

cl_int CL_API_CALL clGetDeviceIDs(cl_platform_id platform, cl_device_type device_type,
                                  cl_uint num_entries, cl_device_id *devices, cl_uint *num_devices)
{
    if (tdm__cl_load_error())
        return CL_INVALID_PLATFORM;
    return p_clGetDeviceIDs(platform, device_type, num_entries, devices, num_devices);
}

cl_int CL_API_CALL clGetDeviceInfo(cl_device_id device, cl_device_info param_name,
                                   size_t param_value_size, void *param_value,
                                   size_t *param_value_size_ret)
{
    if (tdm__cl_load_error())
        return CL_INVALID_PLATFORM;
    return p_clGetDeviceInfo(device, param_name, param_value_size, param_value,
                             param_value_size_ret);
}

cl_int CL_API_CALL clGetEventInfo(cl_event event, cl_event_info param_name, size_t param_value_size,
                                  void *param_value, size_t *param_value_size_ret)
{
    if (tdm__cl_load_error())
        return CL_INVALID_PLATFORM;
    return p_clGetEventInfo(event, param_name, param_value_size, param_value, param_value_size_ret);
}

cl_int CL_API_CALL clGetKernelArgInfo(cl_kernel kernel, cl_uint arg_indx,
                                      cl_kernel_arg_info param_name, size_t param_value_size,
                                      void *param_value, size_t *param_value_size_ret)
{
    if (tdm__cl_load_error())
        return CL_INVALID_PLATFORM;
    return p_clGetKernelArgInfo(kernel, arg_indx, param_name, param_value_size, param_value,
                                param_value_size_ret);
}

cl_int CL_API_CALL clGetKernelInfo(cl_kernel kernel, cl_kernel_info param_name,
                                   size_t param_value_size, void *param_value,
                                   size_t *param_value_size_ret)
{
    if (tdm__cl_load_error())
        return CL_INVALID_PLATFORM;
    return p_clGetKernelInfo(kernel, param_name, param_value_size, param_value,
                             param_value_size_ret);
}

cl_int CL_API_CALL clGetKernelWorkGroupInfo(cl_kernel kernel, cl_device_id device,
                                            cl_kernel_work_group_info param_name,
                                            size_t param_value_size, void *param_value,
                                            size_t *param_value_size_ret)
{
    if (tdm__cl_load_error())
        return CL_INVALID_PLATFORM;
    return p_clGetKernelWorkGroupInfo(kernel, device, param_name, param_value_size, param_value,
                                      param_value_size_ret);
}

cl_int CL_API_CALL clGetProgramBuildInfo(cl_program program, cl_device_id device,
                                         cl_program_build_info param_name, size_t param_value_size,
                                         void *param_value, size_t *param_value_size_ret)
{
    if (tdm__cl_load_error())
        return CL_INVALID_PLATFORM;
    return p_clGetProgramBuildInfo(program, device, param_name, param_value_size, param_value,
                                   param_value_size_ret);
}

cl_int CL_API_CALL clReleaseCommandQueue(cl_command_queue command_queue)
{
    if (tdm__cl_load_error())
        return CL_INVALID_PLATFORM;
    return p_clReleaseCommandQueue(command_queue);
}

cl_int CL_API_CALL clReleaseContext(cl_context context)
{
    if (tdm__cl_load_error())
        return CL_INVALID_PLATFORM;
    return p_clReleaseContext(context);
}

cl_int CL_API_CALL clReleaseEvent(cl_event event)
{
    if (tdm__cl_load_error())
        return CL_INVALID_PLATFORM;
    return p_clReleaseEvent(event);
}

cl_int CL_API_CALL clRetainEvent(cl_event event)
{
    if (tdm__cl_load_error())
        return CL_INVALID_PLATFORM;
    return p_clRetainEvent(event);
}

cl_int CL_API_CALL clReleaseKernel(cl_kernel kernel)
{
    if (tdm__cl_load_error())
        return CL_INVALID_PLATFORM;
    return p_clReleaseKernel(kernel);
}

cl_int CL_API_CALL clReleaseMemObject(cl_mem memobj)
{
    if (tdm__cl_load_error())
        return CL_INVALID_PLATFORM;
    return p_clReleaseMemObject(memobj);
}

cl_int CL_API_CALL clReleaseProgram(cl_program program)
{
    if (tdm__cl_load_error())
        return CL_INVALID_PLATFORM;
    return p_clReleaseProgram(program);
}

cl_int CL_API_CALL clSetKernelArg(cl_kernel kernel, cl_uint arg_index, size_t arg_size,
                                  const void *arg_value)
{
    if (tdm__cl_load_error())
        return CL_INVALID_PLATFORM;
    return p_clSetKernelArg(kernel, arg_index, arg_size, arg_value);
}
