import { gql } from '@apollo/client';
import * as Apollo from '@apollo/client';
export type Maybe<T> = T | null;
export type InputMaybe<T> = Maybe<T>;
export type Exact<T extends { [key: string]: unknown }> = { [K in keyof T]: T[K] };
export type MakeOptional<T, K extends keyof T> = Omit<T, K> & { [SubKey in K]?: Maybe<T[SubKey]> };
export type MakeMaybe<T, K extends keyof T> = Omit<T, K> & { [SubKey in K]: Maybe<T[SubKey]> };
export type MakeEmpty<T extends { [key: string]: unknown }, K extends keyof T> = { [_ in K]?: never };
export type Incremental<T> = T | { [P in keyof T]?: P extends ' $fragmentName' | '__typename' ? T[P] : never };
const defaultOptions = {} as const;
/** All built-in and custom scalars, mapped to their actual values */
export type Scalars = {
  ID: { input: string; output: string; }
  String: { input: string; output: string; }
  Boolean: { input: boolean; output: boolean; }
  Int: { input: number; output: number; }
  Float: { input: number; output: number; }
};

/** A product on sale. */
export type Product = {
  __typename?: 'Product';
  id: Scalars['ID']['output'];
  name: Scalars['String']['output'];
  price?: Maybe<Scalars['Int']['output']>;
};

export type Query = {
  __typename?: 'Query';
  product?: Maybe<Product>;
  topProducts: Array<Product>;
};


export type QueryProductArgs = {
  id: Scalars['ID']['input'];
};


export type QueryTopProductsArgs = {
  first?: InputMaybe<Scalars['Int']['input']>;
};

export type TopProductsQueryVariables = Exact<{ [key: string]: never; }>;


export type TopProductsQuery = { __typename?: 'Query', topProducts: Array<{ __typename?: 'Product', id: string, name: string, price?: number | null }> };


export const TopProductsDocument = gql`
    query TopProducts {
  topProducts {
    id
    name
    price
  }
}
    `;

/**
 * __useTopProductsQuery__
 *
 * To run a query within a React component, call `useTopProductsQuery` and pass it any options that fit your needs.
 * When your component renders, `useTopProductsQuery` returns an object from Apollo Client that contains loading, error, and data properties
 * you can use to render your UI.
 *
 * @param baseOptions options that will be passed into the query, supported options are listed on: https://www.apollographql.com/docs/react/api/react-hooks/#options;
 *
 * @example
 * const { data, loading, error } = useTopProductsQuery({
 *   variables: {
 *   },
 * });
 */
export function useTopProductsQuery(baseOptions?: Apollo.QueryHookOptions<TopProductsQuery, TopProductsQueryVariables>) {
        const options = {...defaultOptions, ...baseOptions}
        return Apollo.useQuery<TopProductsQuery, TopProductsQueryVariables>(TopProductsDocument, options);
      }
export function useTopProductsLazyQuery(baseOptions?: Apollo.LazyQueryHookOptions<TopProductsQuery, TopProductsQueryVariables>) {
          const options = {...defaultOptions, ...baseOptions}
          return Apollo.useLazyQuery<TopProductsQuery, TopProductsQueryVariables>(TopProductsDocument, options);
        }
// @ts-ignore
export function useTopProductsSuspenseQuery(baseOptions?: Apollo.SuspenseQueryHookOptions<TopProductsQuery, TopProductsQueryVariables>): Apollo.UseSuspenseQueryResult<TopProductsQuery, TopProductsQueryVariables>;
export function useTopProductsSuspenseQuery(baseOptions?: Apollo.SkipToken | Apollo.SuspenseQueryHookOptions<TopProductsQuery, TopProductsQueryVariables>): Apollo.UseSuspenseQueryResult<TopProductsQuery | undefined, TopProductsQueryVariables>;
export function useTopProductsSuspenseQuery(baseOptions?: Apollo.SkipToken | Apollo.SuspenseQueryHookOptions<TopProductsQuery, TopProductsQueryVariables>) {
          const options = baseOptions === Apollo.skipToken ? baseOptions : {...defaultOptions, ...baseOptions}
          return Apollo.useSuspenseQuery<TopProductsQuery, TopProductsQueryVariables>(TopProductsDocument, options);
        }
export type TopProductsQueryHookResult = ReturnType<typeof useTopProductsQuery>;
export type TopProductsLazyQueryHookResult = ReturnType<typeof useTopProductsLazyQuery>;
export type TopProductsSuspenseQueryHookResult = ReturnType<typeof useTopProductsSuspenseQuery>;
export type TopProductsQueryResult = Apollo.QueryResult<TopProductsQuery, TopProductsQueryVariables>;