// One piece of cluster-wide background work the elected controller runs while it leads.
export interface ControllerDuty { readonly name: string; start (): Promise<void>; close (): Promise<void> }
