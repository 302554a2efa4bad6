/** Types of asl-validator (the package ships none): the Amazon States Language validator. */
declare module 'asl-validator' {
  interface AslValidationResult {
    readonly isValid: boolean;
    readonly errors: readonly { readonly message: string }[];
    errorsText(separator?: string): string;
  }
  /** Validates a state machine definition (it adds `QueryLanguage` to states: pass a copy). */
  function aslValidator(
    definition: unknown,
    options?: { readonly checkPaths?: boolean; readonly checkArn?: boolean },
  ): AslValidationResult;
  export = aslValidator;
}
