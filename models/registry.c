#include "models/registry.h"
#include "models/dit/denoiser.h"
#include "models/flite/denoiser.h"

#include <string.h>

static const struct denoiser_kind *const denoisers[] = {
    &dit_denoiser_kind,
    &flite_denoiser_kind,
    NULL,
};

const struct denoiser_kind *const *registry_denoisers(void)
{
    return denoisers;
}

const struct denoiser_kind *registry_denoiser_by_class(const char *class_name)
{
    for (size_t i = 0; class_name && denoisers[i]; i++)
        if (strcmp(denoisers[i]->class_name, class_name) == 0 ||
            (denoisers[i]->class_alias && strcmp(denoisers[i]->class_alias, class_name) == 0))
            return denoisers[i];
    return NULL;
}

const struct denoiser_kind *registry_denoiser_by_name(const char *name)
{
    for (size_t i = 0; name && denoisers[i]; i++)
        if (strcmp(denoisers[i]->name, name) == 0)
            return denoisers[i];
    return NULL;
}
